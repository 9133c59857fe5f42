"""Lava backend (docs/lava_backend.md). Import-safe: Lava itself is imported only inside the
functions below and in the submodules `processes` / `models` / `build` / `runner`."""
from __future__ import annotations


def run_artifact(*args, **kwargs):
    """See ns_compile.backends.lava.runner.run_artifact."""
    from ns_compile.backends.lava.runner import run_artifact as _run
    return _run(*args, **kwargs)


def custom_microcode_processes(graph=None):
    """Process types that need custom Loihi 2 microcode, with their docs/fixed_point.md sections."""
    from ns_compile.backends.lava.loihi2 import custom_microcode_processes as _f
    return _f(graph)


def lava_loihi_missing():
    from ns_compile.backends.lava.loihi2 import lava_loihi_missing as _f
    return _f()
