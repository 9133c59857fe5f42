"""Lava Processes of the Nord backend (docs/fixed_point.md §7, docs/lava_backend.md). Import-safe:
class definitions only. Models are in `ns_compile.backends.lava.nord` and are chosen per instance
through `exception_proc_model_map`.

- `LifNord`: one lif_nord population (§7.2). InPorts `I` (feed-forward / host-fed Dense groups),
  `C` (the cascade Dense, one step = one frame of delay), `drive` (host drive, direct);
  OutPorts `s_out` (binary spikes), `v_out` (graded membrane, 24-bit), `trace` (V then s).
  Active on step t when k = (t − 1 − offset) mod period < frames; state reset at k = 0.
- `NordStageProc`: one Nord stage (hierarchical: per-population view, or a fused model).
  InPort `drv` (the drive op's per-frame output), OutPorts `ro_j` / `rv_j` (spikes / membrane of
  the j-th host readout), `tr_i` (trace of population i).
- `NordHostProc`: the Nord host program; InPort `tok`, OutPort `out` (logits), per stage i
  OutPort `drv_i` and InPorts `ro_i_j` / `rv_i_j`.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class LifNord(AbstractProcess):
    def __init__(self, *, shape, params=None, fmt=None, period=1, offset=0, frames=1, drive=False, name=None, **kw):
        n = int(shape[0])
        super().__init__(shape=(n,), fmt=dict(fmt or {}), period=int(period), offset=int(offset), frames=int(frames),
                         drive=bool(drive), name=name, **kw)
        params = params or {}
        self.I = InPort(shape=(n,))
        self.C = InPort(shape=(n,))
        self.drive = InPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.v_out = OutPort(shape=(n,))
        self.trace = OutPort(shape=(2 * n,))
        self.u = Var(shape=(n,), init=0)
        self.v = Var(shape=(n,), init=0)
        self.r = Var(shape=(n,), init=0)
        for p in ("BS", "BM", "TH", "VRESET", "RT"):
            val = np.asarray(params[p]).reshape(-1)
            setattr(self, p.lower(), Var(shape=val.shape, init=val))


class NordStageProc(AbstractProcess):
    def __init__(self, *, spec, trace=False, name=None, **kw):
        super().__init__(spec=spec, trace=bool(trace), name=name, **kw)
        self.drv = InPort(shape=(spec.drive_size,))
        for j, (pn, n, emit_v) in enumerate(spec.readouts):
            setattr(self, f"ro_{j}", OutPort(shape=(n,)))
            if emit_v:
                setattr(self, f"rv_{j}", OutPort(shape=(n,)))
        if trace:
            for i, p in enumerate(spec.pops):
                setattr(self, f"tr_{i}", OutPort(shape=(2 * p.size,)))


class NordHostProc(AbstractProcess):
    def __init__(self, *, host, stage_ports, out_size, name=None, **kw):
        # stage_ports: per stage (drive size, [(readout size, emit_v)])
        super().__init__(host=host, stage_ports=stage_ports, out_size=int(out_size), name=name, **kw)
        self.tok = InPort(shape=(1,))
        self.out = OutPort(shape=(int(out_size),))
        for i, (dn, ros) in enumerate(stage_ports):
            setattr(self, f"drv_{i}", OutPort(shape=(int(dn),)))
            for j, (n, emit_v) in enumerate(ros):
                setattr(self, f"ro_{i}_{j}", InPort(shape=(int(n),)))
                if emit_v:
                    setattr(self, f"rv_{i}_{j}", InPort(shape=(int(n),)))
