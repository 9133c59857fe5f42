"""Lava Processes of the backend: one per IR neuron type, the hierarchical stage Process and the
host-program Process. Import-safe: only class definitions, no work at import.

Models live in `ns_compile.backends.lava.models` and are always chosen per instance through
`exception_proc_model_map`, so Lava never runs its module discovery on this package.

Every neuron Process takes its schedule as proc params: it is active on Lava time step t when
k = (t − 1 − offset) mod period < frames (k is the frame); on other steps it keeps its state and
sends zeros. Each synapse-fed port P has a twin InPort `P_e` for groups that arrive early: the
neuron buffers it `early[P]` steps (delay buffer of docs/fixed_point.md §6).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class _NeuronPop(AbstractProcess):
    """Common part: shape, schedule, optional drive port, trace port, state Var `v`."""
    PORTS: tuple[str, ...] = ()
    PARAMS: tuple[str, ...] = ()
    STATEFUL = False

    def __init__(self, *, shape, params=None, fmt=None, luts=None, period=1, offset=0, frames=1,
                 early=None, drive=False, name=None, **kw):
        n = int(shape[0])
        super().__init__(shape=(n,), fmt=dict(fmt or {}), luts=luts, period=int(period), offset=int(offset),
                         frames=int(frames), early=dict(early or {}), drive=bool(drive), name=name, **kw)
        params = params or {}
        for p in self.PORTS:
            setattr(self, p, InPort(shape=(n,)))
            setattr(self, p + "_e", InPort(shape=(n,)))
        self.drive = InPort(shape=(n,))              # host drive (connected for drive targets only)
        self.s_out = OutPort(shape=(n,))
        self.trace = OutPort(shape=((2 if self.STATEFUL else 1) * n,))
        if self.STATEFUL:
            self.v = Var(shape=(n,), init=0)
        for p in self.PARAMS:
            val = np.asarray(params[p]).reshape(-1)
            setattr(self, p.lower(), Var(shape=val.shape, init=val))


class PlifStatic(_NeuronPop):
    """docs/fixed_point.md §3.1."""
    PORTS = ("I",)
    PARAMS = ("B", "TH")
    STATEFUL = True


class PlifSelective(_NeuronPop):
    """docs/fixed_point.md §3.2: ports I, XB, XA, XT."""
    PORTS = ("I", "XB", "XA", "XT")
    PARAMS = ("BB", "BA", "BT", "VTHMIN")
    STATEFUL = True


class GatedReadout(_NeuronPop):
    """docs/fixed_point.md §3.3: ports R, G, Q."""
    PORTS = ("R", "G", "Q")


class Accumulate(_NeuronPop):
    """docs/fixed_point.md §3.5: port A."""
    PORTS = ("A",)


NEURON_PROCESSES = {"plif_static": PlifStatic, "plif_selective": PlifSelective,
                    "gated_readout": GatedReadout, "accumulate": Accumulate}


class StageProc(AbstractProcess):
    """One stage (K frames between two host ops) as a hierarchical Process.

    Ports: `drv_<j>` (drive of the j-th drive target), `ro` (readout payloads to the host) and,
    with trace=True, `tr_<i>` per population i of the stage (V then out, or out only).
    Models: the SubProcessModel builds the per-population view (Populations + Dense), the fused
    PyLoihiProcessModel computes the whole stage frame by frame in one process.
    `spec` is a `build.StageSpec` (plain data)."""

    def __init__(self, *, spec, trace=False, name=None, **kw):
        super().__init__(spec=spec, trace=bool(trace), name=name, **kw)
        for j, n in enumerate(spec.drive_sizes):
            setattr(self, f"drv_{j}", InPort(shape=(n,)))
        self.ro = OutPort(shape=(spec.readout_size,))
        if trace:
            for i, n in enumerate(spec.trace_sizes):
                setattr(self, f"tr_{i}", OutPort(shape=(n,)))


class HostProc(AbstractProcess):
    """The host program (embedding, RMSNorm drives, PonderNet + residual, decode, head) as one CPU
    process: InPort `tok` (token id from the Injector), `ro_<i>` per stage; OutPorts `drv_<i>_<j>`
    per stage drive target and `out` (logits, to the Extractor)."""

    def __init__(self, *, host, stage_ports, out_size, name=None, **kw):
        # stage_ports: list of (readout_size, [drive sizes]) per stage
        super().__init__(host=host, stage_ports=stage_ports, out_size=int(out_size), name=name, **kw)
        self.tok = InPort(shape=(1,))
        self.out = OutPort(shape=(int(out_size),))
        for i, (ro, drvs) in enumerate(stage_ports):
            setattr(self, f"ro_{i}", InPort(shape=(int(ro),)))
            for j, n in enumerate(drvs):
                setattr(self, f"drv_{i}_{j}", OutPort(shape=(int(n),)))


class FailingProbe(AbstractProcess):
    """Test aid: a process whose model raises in run_spk at step `fail_at` (crash handling)."""

    def __init__(self, *, shape=(1,), fail_at=1, **kw):
        super().__init__(shape=shape, fail_at=int(fail_at), **kw)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
