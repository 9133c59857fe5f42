"""Atomic outputs: a failure or Ctrl-C leaves nothing half-written behind."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, directory: bool = False):
    """Yield a temporary path next to `dest`; rename it onto `dest` only if the block succeeds.

    The temporary lives in the destination's folder so the final rename is atomic on one
    file system. On any exception (KeyboardInterrupt included) the temporary is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create 0600/0700; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
