"""Progress bars on a terminal; silence in pipes and logs."""
from __future__ import annotations

import sys
import time


class Progress:
    """`with Progress(total, "prefill") as p: ... p.update(n)`; draws only when stderr is a tty."""

    def __init__(self, total: int | None, desc: str, *, enabled: bool | None = None):
        self.total, self.desc, self.n = total, desc, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._t0 = time.monotonic()
        self._last = 0.0

    def __enter__(self):
        self._draw(force=True)
        return self

    def update(self, n: int = 1):
        self.n += n
        self._draw()

    def _draw(self, force=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and self.n != self.total:
            return
        self._last = now
        el = now - self._t0
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(frac * 30)
            msg = f"\r{self.desc} [{bar:<30}] {self.n}/{self.total} {el:5.1f}s"
        else:
            msg = f"\r{self.desc} {self.n} {el:5.1f}s"
        sys.stderr.write(msg)
        sys.stderr.flush()

    def __exit__(self, *exc):
        if self.enabled:
            self._draw(force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
        return False


def progress(iterable, total: int | None = None, desc: str = ""):
    """Wrap an iterable with a Progress bar."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total, desc) as p:
        for x in iterable:
            yield x
            p.update()
