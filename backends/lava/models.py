"""ProcessModels of the backend (selected per instance through exception_proc_model_map).

fixed_pt: docs/fixed_point.md bit for bit (int64 internally, explicit saturation / wrap; every
scalar is a Python int). floating_pt: the same dynamics in real units. Both granularities call
the one implementation in `arith.py`.

Import-safe: class definitions only; the per-stage fused models and the host model have ports
named after the graph, so they are made by factories at build time.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.prodneuron.process import ProdNeuron

from ns_compile.backends.lava import arith
from ns_compile.backends.lava.processes import (
    NEURON_PROCESSES,
    FailingProbe,
    HostProc,
    StageProc,
)

I64 = np.int64


def _frame(time_step: int, period: int, offset: int, frames: int):
    """Frame index processed at this Lava time step, or None when inactive (§6)."""
    k = (int(time_step) - 1 - int(offset)) % int(period)
    return k if k < int(frames) else None


# ---------------------------------------------------------------------------------------------
# per-population neuron models
# ---------------------------------------------------------------------------------------------
class _PopModel(PyLoihiProcessModel):
    KIND = ""
    PORTS: tuple[str, ...] = ()
    PARAMS: tuple[str, ...] = ()
    STATEFUL = False
    FIXED = True

    def __init__(self, proc_params):
        super().__init__(proc_params)
        pp = proc_params
        self._n = int(pp["shape"][0])
        self._period, self._offset, self._frames = int(pp["period"]), int(pp["offset"]), int(pp["frames"])
        self._fmt = {k: int(v) for k, v in (pp["fmt"] or {}).items()}
        self._luts = pp["luts"]
        self._has_drive = bool(pp["drive"])
        self._dtype = I64 if self.FIXED else np.float64
        # §2.1 per-neuron port shifts (fixed only): applied to the port's synapse sum
        self._rs = {p: np.asarray(r, dtype=I64) for p, r in (pp.get("rshift") or {}).items()} if self.FIXED else {}
        # delay buffers of the early twin ports: d arrays each, oldest first
        self._fifo = {p: [np.zeros(self._n, self._dtype) for _ in range(int(d))]
                      for p, d in (pp["early"] or {}).items() if int(d) > 0}

    def _params(self):
        if getattr(self, "_pcache", None) is not None:
            return self._pcache
        out = {}
        for p in self.PARAMS:
            val = np.asarray(getattr(self, p.lower()))
            if self.FIXED:
                val = val.astype(I64)
                out[p] = int(val[0]) if p == "VTHMIN" else val
            else:
                out[p] = float(val[0]) if p == "VTHMIN" else val.astype(np.float64)
        self._pcache = out
        return out

    def run_spk(self):
        k = _frame(self.time_step, self._period, self._offset, self._frames)
        ports = {}
        for p in self.PORTS:
            x = np.asarray(getattr(self, p).recv(), dtype=self._dtype)
            xe = np.asarray(getattr(self, p + "_e").recv(), dtype=self._dtype)
            fifo = self._fifo.get(p)
            if fifo is not None:
                fifo.append(xe)
                x = x + fifo.pop(0)
            if p in self._rs:
                x = arith.port_row_shift(x, self._rs[p])
            ports[p] = x
        if self._has_drive:
            ports["I"] = ports["I"] + np.asarray(self.drive.recv(), dtype=self._dtype)
        if k is None:
            out = np.zeros(self._n, self._dtype)
        else:
            V = np.asarray(self.v, dtype=self._dtype) if self.STATEFUL else None
            if self.FIXED:
                V_new, out = arith.neuron_step_fixed(self.KIND, V, ports, self._params(), self._fmt, self._luts)
            else:
                V_new, out = arith.neuron_step_float(self.KIND, V, ports, self._params())
            if self.STATEFUL:
                self.v[:] = V_new
        self.s_out.send(out)
        if self.STATEFUL:
            self.trace.send(np.concatenate([np.asarray(self.v, dtype=self._dtype), out]))
        else:
            self.trace.send(out)


def _pop_model(proc_cls, fixed: bool):
    kind = [k for k, v in NEURON_PROCESSES.items() if v is proc_cls][0]
    if fixed:
        inp = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
        outp = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)     # Dense multiplies in int32
        trp = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
        var = LavaPyType(np.ndarray, np.int32, precision=24)
        par = LavaPyType(np.ndarray, np.int64, precision=24)
    else:
        inp = LavaPyType(PyInPort.VEC_DENSE, float)
        outp = trp = LavaPyType(PyOutPort.VEC_DENSE, float)
        var = par = LavaPyType(np.ndarray, float)
    ns = {"KIND": kind, "PORTS": proc_cls.PORTS, "PARAMS": proc_cls.PARAMS, "STATEFUL": proc_cls.STATEFUL,
          "FIXED": fixed, "s_out": outp, "trace": trp, "drive": inp, "__module__": __name__}
    for p in proc_cls.PORTS:
        ns[p] = inp
        ns[p + "_e"] = inp
    if proc_cls.STATEFUL:
        ns["v"] = var
    for p in proc_cls.PARAMS:
        ns[p.lower()] = par
    name = f"Py{proc_cls.__name__}{'Fixed' if fixed else 'Float'}"
    cls = type(name, (_PopModel,), ns)
    cls = tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=proc_cls,
                                                                            protocol=LoihiProtocol)(cls)))
    return cls


PyPlifStaticFixed = _pop_model(NEURON_PROCESSES["plif_static"], True)
PyPlifStaticFloat = _pop_model(NEURON_PROCESSES["plif_static"], False)
PyPlifSelectiveFixed = _pop_model(NEURON_PROCESSES["plif_selective"], True)
PyPlifSelectiveFloat = _pop_model(NEURON_PROCESSES["plif_selective"], False)
PyGatedReadoutFixed = _pop_model(NEURON_PROCESSES["gated_readout"], True)
PyGatedReadoutFloat = _pop_model(NEURON_PROCESSES["gated_readout"], False)
PyAccumulateFixed = _pop_model(NEURON_PROCESSES["accumulate"], True)
PyAccumulateFloat = _pop_model(NEURON_PROCESSES["accumulate"], False)

POP_MODELS = {
    ("plif_static", True): PyPlifStaticFixed, ("plif_static", False): PyPlifStaticFloat,
    ("plif_selective", True): PyPlifSelectiveFixed, ("plif_selective", False): PyPlifSelectiveFloat,
    ("gated_readout", True): PyGatedReadoutFixed, ("gated_readout", False): PyGatedReadoutFloat,
    ("accumulate", True): PyAccumulateFixed, ("accumulate", False): PyAccumulateFloat,
}


@implements(proc=ProdNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyProdNeuronFloat(PyLoihiProcessModel):
    """Float twin of the stock ProdNeuron (which ships only a fixed_pt model): out = X1 · X2."""
    a_in1 = LavaPyType(PyInPort.VEC_DENSE, float)
    a_in2 = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out = LavaPyType(PyOutPort.VEC_DENSE, float)
    v = LavaPyType(np.ndarray, float)
    vth = LavaPyType(np.ndarray, float)
    exp = LavaPyType(np.ndarray, float)

    def run_spk(self):
        self.s_out.send(self.a_in1.recv() * self.a_in2.recv())


# ---------------------------------------------------------------------------------------------
# fused stage model and the per-population SubProcessModel of StageProc
# ---------------------------------------------------------------------------------------------
class _FusedStageModel(PyLoihiProcessModel):
    """The whole stage in one process, one frame per active step, no internal delays."""
    FIXED = True

    def __init__(self, proc_params):
        super().__init__(proc_params)
        spec = proc_params["spec"]
        self._spec = spec
        self._trace = bool(proc_params["trace"])
        dt = I64 if self.FIXED else np.float64
        self._dtype = dt
        self._V = {p.name: np.zeros(p.size, dt) for p in spec.pops if arith.STATEFUL[p.kind]}
        self._in = {p.name: [s for s in spec.synapses if s.dst == p.name] for p in spec.pops}
        self._rs = {p.name: arith.row_shifts(p.params) for p in spec.pops} if self.FIXED else {}
        self._dir = {p.name: [d for d in spec.directs if d[1] == p.name] for p in spec.pops}

    def _syn(self, s, x):
        if self.FIXED:
            return arith.synapse_fixed(s.weight, x, s.bits, s.weight_exp)
        return s.weight @ x

    def run_spk(self):
        spec = self._spec
        dt = self._dtype
        k = _frame(self.time_step, spec.period, spec.offset, spec.frames)
        drives = [np.asarray(getattr(self, f"drv_{j}").recv(), dtype=dt) for j in range(len(spec.drive_sizes))]
        pay = {}
        if k is not None:
            for p in spec.pops:
                ports = {q: np.zeros(p.size, dt) for q in p.ports}
                for s in self._in[p.name]:
                    ports[s.port] = ports[s.port] + self._syn(s, pay[s.src])
                for port, r in self._rs.get(p.name, {}).items():     # §2.1, before the drive
                    ports[port] = arith.port_row_shift(ports[port], r)
                for src, _, port in self._dir[p.name]:
                    ports[port] = ports[port] + pay[src]
                if p.drive_index is not None:
                    ports["I"] = ports["I"] + drives[p.drive_index]
                V = self._V.get(p.name)
                if self.FIXED:
                    V_new, out = arith.neuron_step_fixed(p.kind, V, ports, p.params, p.fmt, spec.luts)
                else:
                    V_new, out = arith.neuron_step_float(p.kind, V, ports, p.params)
                if V is not None:
                    self._V[p.name] = V_new
                pay[p.name] = out
            self.ro.send(pay[spec.readout])
        else:
            self.ro.send(np.zeros(spec.readout_size, dt))
        if self._trace:
            for i, p in enumerate(spec.pops):
                out = pay.get(p.name, np.zeros(p.size, dt))
                if p.name in self._V:
                    out = np.concatenate([self._V[p.name], out])
                getattr(self, f"tr_{i}").send(out)



def port_types(fixed: bool, out_dtype=np.int64):
    """LavaPyTypes of a graded (InPort, OutPort) pair: 24-bit integers carried in int64 (out_dtype
    for a port that feeds a stock Dense, which multiplies in int32) in fixed point; floats otherwise."""
    if fixed:
        return (LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24),
                LavaPyType(PyOutPort.VEC_DENSE, out_dtype, precision=24))
    return LavaPyType(PyInPort.VEC_DENSE, float), LavaPyType(PyOutPort.VEC_DENSE, float)

def make_fused_model(spec, fixed: bool, trace: bool):
    inp, outp = port_types(fixed)
    ns = {"FIXED": fixed, "ro": outp, "__module__": __name__}
    for j in range(len(spec.drive_sizes)):
        ns[f"drv_{j}"] = inp
    if trace:
        for i in range(len(spec.pops)):
            ns[f"tr_{i}"] = outp
    cls = type(f"PyFusedStage_{'Fixed' if fixed else 'Float'}", (_FusedStageModel,), ns)
    return tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=StageProc,
                                                                             protocol=LoihiProtocol)(cls)))


@implements(proc=StageProc, protocol=LoihiProtocol)
class StagePopulationsModel(AbstractSubProcessModel):
    """Per-population view of a stage: one Process per population, one Dense per synapse group.
    The children's models are registered per instance in the run config's exception map that the
    builder attached to the StageProc (`_ns_model_map`), so Lava never runs module discovery."""

    def __init__(self, proc):
        from ns_compile.backends.lava.build import build_stage_population_view
        self._ns_children = build_stage_population_view(proc)
        for name, child in self._ns_children.items():
            setattr(self, name, child)


# ---------------------------------------------------------------------------------------------
# host program
# ---------------------------------------------------------------------------------------------
class _HostModel(PyLoihiProcessModel):
    """Runs `host` (a build.HostProgram) on the schedule: receives the token at relative step 0,
    sends each stage's drive on its frames, collects the readouts and emits the logits."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._host = proc_params["host"]
        self._n_out = int(proc_params["out_size"])
        self._sp = proc_params["stage_ports"]
        self._dt = I64 if self.FIXED else np.float64
        self._drv = self._ro = None                      # ports are bound after __init__
        self._zero_drv = [[np.zeros(int(n), self._dt) for n in d] for _, d in self._sp]

    def run_spk(self):
        h = self._host
        r = (self.time_step - 1) % h.plan.period
        if self._drv is None:
            self._drv = [[getattr(self, f"drv_{i}_{j}") for j in range(len(d))] for i, (_, d) in enumerate(self._sp)]
            self._ro = [getattr(self, f"ro_{i}") for i in range(len(self._sp))]
        # sends first (drive for this step, logits on the logits step)
        for i, ports in enumerate(self._drv):
            for j, port in enumerate(ports):
                port.send(h.drive_at(r, i, j, self._zero_drv[i][j]))
        self.out.send(h.output_at(r, self._n_out))
        # receives
        tok = self.tok.recv()
        ros = [p.recv() for p in self._ro]
        h.step(r, tok, ros)


def make_host_model(stage_ports, fixed: bool):
    inp, outp = port_types(fixed)
    ns = {"FIXED": fixed, "tok": LavaPyType(PyInPort.VEC_DENSE, float), "out": LavaPyType(PyOutPort.VEC_DENSE, float),
          "__module__": __name__}
    for i, (_, drvs) in enumerate(stage_ports):
        ns[f"ro_{i}"] = inp
        for j in range(len(drvs)):
            ns[f"drv_{i}_{j}"] = outp
    cls = type(f"PyHost_{'Fixed' if fixed else 'Float'}", (_HostModel,), ns)
    return tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=HostProc,
                                                                             protocol=LoihiProtocol)(cls)))


@implements(proc=FailingProbe, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyFailingProbe(PyLoihiProcessModel):
    """Test aid for crash handling: raises inside run_spk at step `fail_at`."""
    a_in = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    s_out = LavaPyType(PyOutPort.VEC_DENSE, np.int64)

    def run_spk(self):
        x = self.a_in.recv()
        if self.time_step >= int(self.proc_params["fail_at"]):
            raise ValueError(f"ns-compile test probe: deliberate failure at step {self.time_step}")
        self.s_out.send(np.asarray(x, dtype=np.int64))
