"""The Loihi 2 hardware path (INRC only) and the list of processes that need custom microcode.

`Loihi2HwCfg` without the proprietary lava-loihi package crashes inside Lava with
`NameError: name 'CLoihiProcessModel' is not defined` (lava_loihi.md §2.4 item 6); we check first
and raise a UserError that names what is missing.
"""
from __future__ import annotations

import importlib

from ns_compile.errors import UserError

# Import paths lava-loihi provides (lava_loihi.md §5).
_LAVA_LOIHI_MODULES = (
    "lava.magma.core.model.nc.model",
    "lava.magma.compiler.subcompilers.nc.ncproc_compiler",
)


def lava_loihi_missing() -> str | None:
    """None when lava-loihi is importable, else a sentence saying what is missing."""
    try:
        from lava.utils import loihi
        if loihi.is_installed():
            return None
    except Exception:                                     # noqa: BLE001
        pass
    missing = []
    for m in _LAVA_LOIHI_MODULES:
        try:
            importlib.import_module(m)
        except Exception:                                 # noqa: BLE001
            missing.append(m)
    if not missing:
        return None
    return ("the loihi2 backend needs Intel's proprietary lava-loihi package (distributed to Intel "
            "Neuromorphic Research Community (INRC) members only), which is not installed "
            f"(cannot import {', '.join(missing)}); run with --backend lava-sim instead")


def require_lava_loihi() -> None:
    msg = lava_loihi_missing()
    if msg:
        raise UserError(msg)


def hw_run_cfg(select_tag: str, model_map: dict):
    """Loihi2HwCfg with our per-instance model pins (custom neurons need NcProcessModels with
    microcode that lava-loihi users must supply; see custom_microcode_processes())."""
    require_lava_loihi()
    from lava.magma.core.run_configs import Loihi2HwCfg
    return Loihi2HwCfg(select_tag=select_tag, exception_proc_model_map=model_map)


def custom_microcode_processes(graph=None) -> list[dict]:
    """Process types that need a custom Loihi 2 microcode neuron (no stock NcProcessModel), with
    the section of docs/fixed_point.md that defines them; restricted to the types `graph` uses."""
    from ns_compile.ir.neurons import NEURON_TYPES
    used = None if graph is None else {p.kind for p in graph.populations.values()}
    procs = {"plif_static": "PlifStatic", "plif_selective": "PlifSelective",
             "gated_readout": "GatedReadout", "accumulate": "Accumulate"}
    out = []
    for name, t in NEURON_TYPES.items():
        if used is not None and name not in used:
            continue
        if t.custom_microcode:
            out.append({"neuron_type": name, "process": f"ns_compile.backends.lava.processes.{procs.get(name, name)}",
                        "doc": f"docs/fixed_point.md {t.doc}",
                        "populations": None if graph is None else sum(1 for p in graph.populations.values()
                                                                       if p.kind == name)})
    return out
