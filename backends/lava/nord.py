"""Nord on Lava (docs/fixed_point.md §7, docs/lava_backend.md "Nord").

One `NordHostProc` runs the Nord host program (encoder, LayerNorms, attention with its K/V-mean
cache, residual updates, readout, LM head — `ns_compile.sim.nord.NordEmulator.run_host`, i.e. the
emulator's own host arithmetic) and one `NordStageProc` per stage runs the lif_nord populations,
either fused (one process per stage, one frame per step) or per population (one `LifNord` process
per population, one stock `Dense` per synapse group: binary `num_message_bits=0` for spike-fed
groups and the cascades, graded for the host-fed W_q/W_k/W_up, whose input port is the host's
drive OutPort). Both granularities are bit-identical to the emulator in fixed point.

Schedule: like docs/fixed_point.md §6 — stage i starts at relative step o_i; the host sends frame k
of the stage's drive at o_i + k; a population processes frame k at o_i + depth + k; the host
collects the readouts, runs the host ops after the last frame and starts the next stage one step
later. The cascade Dense's one step of delay is the frame delay of §7.2.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from ns_compile.backends.lava import arith
from ns_compile.backends.lava.models import port_types
from ns_compile.backends.lava.nord_processes import LifNord, NordHostProc, NordStageProc
from ns_compile.backends.lava.schedule import Plan, StagePlan
from ns_compile.errors import UserError

I64 = np.int64


def _frame(time_step, period, offset, frames):
    k = (int(time_step) - 1 - int(offset)) % int(period)
    return k if k < int(frames) else None


# ---------------------------------------------------------------------------------------------
# lif_nord update (§7.2), numpy; shared by the per-population and the fused models
# ---------------------------------------------------------------------------------------------
def lif_nord_step(st: dict, k: int, I, C, P: dict, fixed: bool):
    """st: {"U", "V", "R"} (updated in place); I, C: port sums (C ignored at k = 0). Returns (s, V)."""
    if k == 0:
        for key in ("U", "V", "R"):
            st[key] = np.zeros_like(st[key])
        C = 0
    R = st["R"]
    if fixed:
        U = arith.sat24(arith.decay(st["U"], P["BS"]) + arith.sat24(I) + (arith.sat24(C) if k else 0))
        Vt = arith.sat24(arith.decay(st["V"], P["BM"]) + U)
        V = np.where(R > 0, P["VRESET"], Vt)
        s = V >= P["TH"]
        V = arith.sat24(V - np.where(s, P["TH"], 0))
    else:
        U = P["BS"] * st["U"] + I + (C if k else 0)
        Vt = P["BM"] * st["V"] + U
        V = np.where(R > 0, P["VRESET"], Vt)
        s = V >= P["TH"]
        V = V - np.where(s, P["TH"], 0.0)
    st["U"], st["V"] = U, V
    st["R"] = np.where(s, P["RT"], np.maximum(R - 1, 0))
    return s.astype(I64 if fixed else np.float64), V


# ---------------------------------------------------------------------------------------------
# plain-data stage description
# ---------------------------------------------------------------------------------------------
@dataclass
class NordPop:
    name: str
    size: int
    params: dict
    drive: bool
    depth: int


@dataclass
class NordSyn:
    name: str
    src: str                   # population, or "host"
    dst: str
    port: str                  # "I" | "C"
    weight: np.ndarray         # fixed: int64 mantissas; float: float64
    bits: int
    weight_exp: int
    graded: bool


@dataclass
class NordStageSpec:
    name: str
    index: int
    frames: int
    period: int
    offset: int
    pops: list
    synapses: list
    drive_size: int
    readouts: list             # (population, size, emit_v)
    fixed: bool


def _params(p, fixed):
    out = {}
    for k in ("BS", "BM", "TH", "VRESET"):
        a = np.asarray(p.params[k]).reshape(-1)
        if fixed and a.dtype.kind == "f" and not np.all(a == np.round(a)):
            raise UserError(f"{p.name}.{k}: fixed mode needs integer values (is the graph quantized?)")
        out[k] = a.astype(I64) if fixed else a.astype(np.float64)
    out["RT"] = int(np.asarray(p.params["RT"]).reshape(-1)[0])
    return out


def nord_plan(graph, granularity: str) -> Plan:
    if granularity not in ("fused", "population"):
        raise UserError(f"unknown granularity {granularity!r} (fused | population)")
    fused = granularity == "fused"
    stages, r = [], 1
    for i, st in enumerate(graph.stages):
        depth = {p: (0 if fused else int(graph.populations[p].depth)) for p in st.populations}
        if not fused:
            for p in st.populations:
                for s in graph.inputs_of(p):
                    if s.meta.get("recurrent"):
                        continue
                    src_d = 1 if s.src.startswith("host:") else depth[s.src] + 1
                    if depth[p] != src_d:
                        raise UserError(f"synapse group {s.name}: depth({p})={depth[p]} != {src_d} (delay buffers are "
                                        "not needed by Nord graphs and not supported here)")
                if p in st.drive_targets and depth[p] != 0:
                    raise UserError(f"drive target {p} must have depth 0")
        ro_d = {depth[p] for p in st.host_readouts()}
        if len(ro_d) != 1:
            raise UserError(f"stage {st.name}: readouts at different depths")
        stages.append(StagePlan(st.name, i, int(st.frames), r, depth, st.readout, ro_d.pop()))
        r = stages[-1].end + 1
    return Plan(granularity, r + 1, stages, r)


def stage_spec(graph, plan, i: int, fixed: bool) -> NordStageSpec:
    st = graph.stages[i]
    sp = plan.stages[i]
    pops, syns = [], []
    for name in st.populations:
        p = graph.populations[name]
        if p.kind != "lif_nord":
            raise UserError(f"population {name}: neuron type {p.kind!r} has no Nord Lava model")
        pops.append(NordPop(name, int(p.size), _params(p, fixed), name in st.drive_targets, sp.depth[name]))
        for s in graph.inputs_of(name):
            if s.weight is None:
                raise UserError(f"synapse group {s.name}: no weights (shape-only graph)")
            src = "host" if s.src.startswith("host:") else s.src
            if src == "host" and s.src[5:] != st.drive:
                raise UserError(f"synapse group {s.name}: host source {s.src} is not the stage's drive op")
            if fixed:
                M = np.asarray(s.weight).astype(I64)
                b = int(s.fmt["bits"])
                syns.append(NordSyn(s.name, src, name, s.dst_port, M, b, int(s.weight_exp()), s.input_kind != "binary"))
            else:
                syns.append(NordSyn(s.name, src, name, s.dst_port, np.asarray(s.weight, dtype=np.float64), 0, 0,
                                    s.input_kind != "binary"))
    hs = [s for s in syns if s.src == "host"]
    dsize = graph.populations[st.drive_targets[0]].size if st.drive_targets else hs[0].weight.shape[1]
    ros = [(p, int(graph.populations[p].size), bool(graph.populations[p].meta.get("emit_v"))) for p in st.host_readouts()]
    return NordStageSpec(st.name, i, int(st.frames), plan.period, sp.offset, pops, syns, int(dsize), ros, fixed)


def _syn(s: NordSyn, x, fixed):
    if fixed:
        return arith.synapse_fixed(s.weight, np.asarray(x, dtype=I64), s.bits, s.weight_exp)
    return s.weight @ np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# per-population model of LifNord
# ---------------------------------------------------------------------------------------------
class _LifNordModel(PyLoihiProcessModel):
    FIXED = True

    def __init__(self, proc_params):
        super().__init__(proc_params)
        pp = proc_params
        self._n = int(pp["shape"][0])
        self._period, self._offset, self._frames = int(pp["period"]), int(pp["offset"]), int(pp["frames"])
        self._has_drive = bool(pp["drive"])
        self._dt = I64 if self.FIXED else np.float64
        self._st = {k: np.zeros(self._n, self._dt) for k in ("U", "V")}
        self._st["R"] = np.zeros(self._n, I64)
        self._P = None

    def _par(self):
        if self._P is None:
            P = {}
            for k in ("BS", "BM", "TH", "VRESET"):
                P[k] = np.asarray(getattr(self, k.lower()), dtype=self._dt)
            P["RT"] = int(np.asarray(self.rt).reshape(-1)[0])
            self._P = P
        return self._P

    def run_spk(self):
        k = _frame(self.time_step, self._period, self._offset, self._frames)
        I = np.asarray(self.I.recv(), dtype=self._dt)
        C = np.asarray(self.C.recv(), dtype=self._dt)
        if self._has_drive:
            I = I + np.asarray(self.drive.recv(), dtype=self._dt)
        if k is None:
            s = np.zeros(self._n, self._dt)
            V = self._st["V"]
        else:
            s, V = lif_nord_step(self._st, k, I, C, self._par(), self.FIXED)
            self.u[:] = self._st["U"]
            self.v[:] = V
            self.r[:] = self._st["R"]
        self.s_out.send(s)
        self.v_out.send(np.asarray(V if k is not None else np.zeros(self._n), dtype=self._dt))
        self.trace.send(np.concatenate([np.asarray(V, dtype=self._dt), s]))


def _lif_model(fixed: bool):
    if fixed:
        inp = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
        outp = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
        trp = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
        var = LavaPyType(np.ndarray, np.int32, precision=24)
        par = LavaPyType(np.ndarray, np.int64, precision=24)
    else:
        inp = LavaPyType(PyInPort.VEC_DENSE, float)
        outp = trp = LavaPyType(PyOutPort.VEC_DENSE, float)
        var = par = LavaPyType(np.ndarray, float)
    ns = {"FIXED": fixed, "I": inp, "C": inp, "drive": inp, "s_out": outp, "v_out": trp, "trace": trp,
          "u": var, "v": var, "r": LavaPyType(np.ndarray, np.int32, precision=24) if fixed else var,
          "__module__": __name__}
    for p in ("bs", "bm", "th", "vreset", "rt"):
        ns[p] = par
    cls = type(f"PyLifNord{'Fixed' if fixed else 'Float'}", (_LifNordModel,), ns)
    return tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=LifNord,
                                                                             protocol=LoihiProtocol)(cls)))


PyLifNordFixed = _lif_model(True)
PyLifNordFloat = _lif_model(False)


# ---------------------------------------------------------------------------------------------
# fused stage model and the per-population SubProcessModel
# ---------------------------------------------------------------------------------------------
class _NordFusedModel(PyLoihiProcessModel):
    FIXED = True

    def __init__(self, proc_params):
        super().__init__(proc_params)
        spec = proc_params["spec"]
        self._spec = spec
        self._trace = bool(proc_params["trace"])
        self._dt = I64 if self.FIXED else np.float64
        self._st = {p.name: {"U": np.zeros(p.size, self._dt), "V": np.zeros(p.size, self._dt),
                             "R": np.zeros(p.size, I64)} for p in spec.pops}
        self._prev = {p.name: np.zeros(p.size, self._dt) for p in spec.pops}
        self._in = {p.name: [s for s in spec.synapses if s.dst == p.name] for p in spec.pops}

    def run_spk(self):
        spec, dt, fx = self._spec, self._dt, self.FIXED
        k = _frame(self.time_step, spec.period, spec.offset, spec.frames)
        drv = np.asarray(self.drv.recv(), dtype=dt)
        pay, vm = {}, {}
        if k is not None:
            for p in spec.pops:
                I = drv.copy() if p.drive else np.zeros(p.size, dt)
                C = np.zeros(p.size, dt)
                for s in self._in[p.name]:
                    if s.port == "C":
                        if k > 0:
                            C = C + _syn(s, self._prev[p.name], fx)
                    else:
                        I = I + _syn(s, drv if s.src == "host" else pay[s.src], fx)
                s_, V = lif_nord_step(self._st[p.name], k, I, C, p.params, fx)
                pay[p.name], vm[p.name] = s_, V
                self._prev[p.name] = s_
        for j, (pn, n, emit_v) in enumerate(spec.readouts):
            getattr(self, f"ro_{j}").send(pay.get(pn, np.zeros(n, dt)))
            if emit_v:
                getattr(self, f"rv_{j}").send(vm.get(pn, np.zeros(n, dt)))
        if self._trace:
            for i, p in enumerate(spec.pops):
                if p.name in pay:
                    out = np.concatenate([vm[p.name], pay[p.name]])
                else:
                    out = np.zeros(2 * p.size, dt)
                getattr(self, f"tr_{i}").send(out)


def make_fused_model(spec, fixed: bool, trace: bool):
    inp, outp = port_types(fixed)
    ns = {"FIXED": fixed, "drv": inp, "__module__": __name__}
    for j, (_, _, emit_v) in enumerate(spec.readouts):
        ns[f"ro_{j}"] = outp
        if emit_v:
            ns[f"rv_{j}"] = outp
    if trace:
        for i in range(len(spec.pops)):
            ns[f"tr_{i}"] = outp
    cls = type(f"PyNordFused_{'Fixed' if fixed else 'Float'}", (_NordFusedModel,), ns)
    return tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=NordStageProc,
                                                                             protocol=LoihiProtocol)(cls)))


def build_population_view(proc) -> dict:
    from lava.proc.dense.models import PyDenseModelBitAcc, PyDenseModelFloat
    from lava.proc.dense.process import Dense
    from lava.utils.weightutils import SignMode

    spec: NordStageSpec = proc.proc_params["spec"]
    trace = bool(proc.proc_params["trace"])
    mm = proc._ns_model_map
    fixed = spec.fixed
    children, byname = {}, {}
    for i, p in enumerate(spec.pops):
        c = LifNord(shape=(p.size,), params={k: (np.array([v]) if k == "RT" else v) for k, v in p.params.items()},
                    period=spec.period, offset=spec.offset + p.depth, frames=spec.frames, drive=p.drive,
                    name=f"{spec.name}:{p.name}")
        mm[c] = PyLifNordFixed if fixed else PyLifNordFloat
        children[f"pop{i}"] = c
        byname[p.name] = c
        if p.drive:
            proc.drv.connect(c.drive)
        if trace:
            c.trace.connect(getattr(proc, f"tr_{i}"))
    for j, (pn, _, emit_v) in enumerate(spec.readouts):
        byname[pn].s_out.connect(getattr(proc, f"ro_{j}"))
        if emit_v:
            byname[pn].v_out.connect(getattr(proc, f"rv_{j}"))
    for j, s in enumerate(spec.synapses):
        if fixed:
            ws = (s.weight << (9 - s.bits)).astype(np.int32)
            d = Dense(weights=ws, num_message_bits=24 if s.graded else 0, weight_exp=int(s.weight_exp),
                      num_weight_bits=int(s.bits), sign_mode=SignMode.MIXED, name=f"{spec.name}:{s.name}")
            mm[d] = PyDenseModelBitAcc
        else:
            d = Dense(weights=s.weight, num_message_bits=24 if s.graded else 0, name=f"{spec.name}:{s.name}")
            mm[d] = PyDenseModelFloat
        children[f"syn{j}"] = d
        if s.src == "host":
            proc.drv.connect(d.s_in)
        else:
            byname[s.src].s_out.connect(d.s_in)
        d.a_out.connect(getattr(byname[s.dst], s.port))
    return children


@implements(proc=NordStageProc, protocol=LoihiProtocol)
class NordStagePopulationsModel(AbstractSubProcessModel):
    def __init__(self, proc):
        self._ns_children = build_population_view(proc)
        for name, child in self._ns_children.items():
            setattr(self, name, child)


# ---------------------------------------------------------------------------------------------
# host program
# ---------------------------------------------------------------------------------------------
class NordHostProgram:
    """The Nord host ops on the schedule, through NordEmulator.run_host (identical arithmetic)."""

    def __init__(self, graph, plan, fixed: bool):
        import torch

        from ns_compile.sim.nord import NordEmulator
        self.plan, self.fixed = plan, fixed
        self.g = graph
        self.emu = NordEmulator(graph, device="cpu", dtype=torch.float64)
        self.state = self.emu.new_state(1)
        segs, si = [[]], 0
        for name in graph.program:
            if si < len(graph.stages) and name == graph.stages[si].name:
                segs.append([])
                si += 1
                continue
            if graph.host_ops[name].kind != "sample":
                segs[-1].append(name)
        self.segments = segs
        self.drives = [None] * len(graph.stages)
        self.frames = [None] * len(graph.stages)
        self.logits = None
        self.env = {}
        self.host_s = 0.0

    def _segment(self, s):
        import torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            for name in self.segments[s]:
                self.emu.run_host(name, self.env, self.state, 1, 1)
        if s < len(self.g.stages):
            d = self.env["drive"]
            self.drives[s] = np.asarray(d.reshape(d.shape[0], -1).cpu().numpy(), dtype=I64 if self.fixed else np.float64)
        if "logits" in self.env and s == len(self.g.stages):
            self.logits = np.asarray(self.env["logits"].reshape(-1).cpu().numpy(), dtype=np.float64)
        self.host_s += time.perf_counter() - t0

    def step(self, r, tok, ros, rvs):
        import torch
        if r == 0:
            tid = int(round(float(np.asarray(tok).reshape(-1)[0])))
            self.env = {"ids": torch.tensor([tid], dtype=torch.long)}
            self.logits = None
            self._segment(0)
        dt = torch.int64 if self.fixed else torch.float64
        for i, sp in enumerate(self.plan.stages):
            k = r - (sp.offset + sp.readout_depth)
            if 0 <= k < sp.frames:
                if k == 0:
                    self.frames[i] = [([], []) for _ in ros[i]]
                for j, x in enumerate(ros[i]):
                    self.frames[i][j][0].append(np.asarray(x))
                    if rvs[i][j] is not None:
                        self.frames[i][j][1].append(np.asarray(rvs[i][j]))
                if k == sp.frames - 1:
                    so = {}
                    for j, pn in enumerate(self.g.stages[i].host_readouts()):
                        S_, V_ = self.frames[i][j]
                        S_t = torch.as_tensor(np.stack(S_), dtype=dt).reshape(sp.frames, 1, -1)
                        V_t = torch.as_tensor(np.stack(V_), dtype=dt).reshape(sp.frames, 1, -1) if V_ else None
                        so[pn] = (S_t, V_t)
                    self.env["stage_out"] = so
                    self._segment(i + 1)

    def drive_at(self, r, i, zero):
        sp = self.plan.stages[i]
        if sp.offset <= r < sp.offset + sp.frames and self.drives[i] is not None:
            return self.drives[i][r - sp.offset]
        return zero

    def output_at(self, r, n):
        if r == self.plan.logits_step and self.logits is not None:
            return self.logits
        return np.zeros(n)


class _NordHostModel(PyLoihiProcessModel):
    FIXED = True

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._host = proc_params["host"]
        self._n_out = int(proc_params["out_size"])
        self._sp = proc_params["stage_ports"]
        self._dt = I64 if self.FIXED else np.float64
        self._zero = [np.zeros(int(dn), self._dt) for dn, _ in self._sp]

    def run_spk(self):
        h = self._host
        r = (self.time_step - 1) % h.plan.period
        for i in range(len(self._sp)):
            getattr(self, f"drv_{i}").send(h.drive_at(r, i, self._zero[i]))
        self.out.send(h.output_at(r, self._n_out))
        tok = self.tok.recv()
        ros, rvs = [], []
        for i, (_, rs) in enumerate(self._sp):
            ros.append([getattr(self, f"ro_{i}_{j}").recv() for j in range(len(rs))])
            rvs.append([getattr(self, f"rv_{i}_{j}").recv() if ev else None for j, (_, ev) in enumerate(rs)])
        h.step(r, tok, ros, rvs)


def make_host_model(stage_ports, fixed: bool):
    inp, outp = port_types(fixed, np.int32)
    ns = {"FIXED": fixed, "tok": LavaPyType(PyInPort.VEC_DENSE, float), "out": LavaPyType(PyOutPort.VEC_DENSE, float),
          "__module__": __name__}
    for i, (_, rs) in enumerate(stage_ports):
        ns[f"drv_{i}"] = outp
        for j, (_, ev) in enumerate(rs):
            ns[f"ro_{i}_{j}"] = inp
            if ev:
                ns[f"rv_{i}_{j}"] = inp
    cls = type(f"PyNordHost_{'Fixed' if fixed else 'Float'}", (_NordHostModel,), ns)
    return tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=NordHostProc,
                                                                             protocol=LoihiProtocol)(cls)))


# ---------------------------------------------------------------------------------------------
# network + session
# ---------------------------------------------------------------------------------------------
@dataclass
class NordNetwork:
    host: object
    host_program: object
    injector: object
    extractor: object
    stages: list
    trace_extractors: dict
    specs: list
    model_map: dict
    vocab: int


def build_network(graph, plan, fixed: bool, trace: bool = False) -> NordNetwork:
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.injector import Injector, PyLoihiInjectorModel

    mm: dict = {}
    specs = [stage_spec(graph, plan, i, fixed) for i in range(len(graph.stages))]
    V = int(graph.config["vocab_size"])
    buf = plan.period + 8
    stage_ports = [(s.drive_size, [(n, ev) for _, n, ev in s.readouts]) for s in specs]
    hp = NordHostProgram(graph, plan, fixed)
    host = NordHostProc(host=hp, stage_ports=stage_ports, out_size=V, name="nord_host")
    mm[host] = make_host_model(stage_ports, fixed)
    inj = Injector(shape=(1,), buffer_size=buf)
    ext = Extractor(shape=(V,), buffer_size=buf)
    mm[inj], mm[ext] = PyLoihiInjectorModel, PyLoihiExtractorModel
    inj.out_port.connect(host.tok)
    host.out.connect(ext.in_port)
    stages, trace_ext = [], {}
    for i, spec in enumerate(specs):
        sp = NordStageProc(spec=spec, trace=trace, name=spec.name)
        if plan.granularity == "fused":
            mm[sp] = make_fused_model(spec, fixed, trace)
        else:
            mm[sp] = NordStagePopulationsModel
            sp._ns_model_map = mm
        getattr(host, f"drv_{i}").connect(sp.drv)
        for j, (_, _, ev) in enumerate(spec.readouts):
            getattr(sp, f"ro_{j}").connect(getattr(host, f"ro_{i}_{j}"))
            if ev:
                getattr(sp, f"rv_{j}").connect(getattr(host, f"rv_{i}_{j}"))
        if trace:
            for j, p in enumerate(spec.pops):
                e = Extractor(shape=(2 * p.size,), buffer_size=buf)
                mm[e] = PyLoihiExtractorModel
                getattr(sp, f"tr_{j}").connect(e.in_port)
                trace_ext[(i, j)] = e
        stages.append(sp)
    return NordNetwork(host, hp, inj, ext, stages, trace_ext, specs, mm, V)


def _token_trace(net, plan, per_step):
    """{stage: {population: {"V": [K, n], "P": [K, n]}}} for one token."""
    out = {}
    for (i, j), rows in per_step.items():
        spec = net.specs[i]
        p = spec.pops[j]
        lo = plan.stages[i].offset + plan.stages[i].depth[p.name]
        arr = np.stack(rows[lo:lo + spec.frames])
        if spec.fixed:
            arr = arr.astype(I64)
        out.setdefault(spec.name, {})[p.name] = {"V": arr[:, :p.size], "P": arr[:, p.size:]}
    return out


def nord_session(graph, prompt_ids, opts):
    """Runs inside the runner's isolated session child (ns_compile.backends.lava.runner)."""
    import torch
    torch.set_num_threads(1)
    from lava.magma.core.run_conditions import RunSteps

    from ns_compile.backends.lava import runner as R
    from ns_compile.sim.host import sample

    cap = R._configure_logging()
    fixed = opts["mode"] == "fixed"
    plan = nord_plan(graph, opts["granularity"])
    net = build_network(graph, plan, fixed, trace=opts["trace"])
    run_cfg, gen, deadline, runtime, t_compile = R._start_session(net, fixed, opts)
    host = net.host
    n_new = int(opts["max_new_tokens"])
    n_tokens = len(prompt_ids) + max(n_new - 1, 0)
    T = plan.period
    traces = [] if opts["trace"] else None
    new_ids, all_logits = [], []
    try:
        host.run(condition=RunSteps(num_steps=n_tokens * T, blocking=False), run_cfg=run_cfg)
        t1 = time.perf_counter()
        for n in range(n_tokens):
            tok = prompt_ids[n] if n < len(prompt_ids) else new_ids[-1]
            net.injector.send(np.array([float(tok)]))
            for _ in range(T - 1):
                net.injector.send(np.zeros(1))
            per_step, logits = {}, None
            for r in range(T):
                x = R._recv(net.extractor, runtime, cap, deadline)
                if r == plan.logits_step:
                    logits = x
                if traces is not None:
                    for key, e in net.trace_extractors.items():
                        per_step.setdefault(key, []).append(R._recv(e, runtime, cap, deadline))
            all_logits.append(logits.astype(np.float32))
            if traces is not None:
                traces.append(_token_trace(net, plan, per_step))
            if n >= len(prompt_ids) - 1 and len(new_ids) < n_new:
                lg = torch.from_numpy(logits.astype(np.float32)).reshape(1, -1)
                new_ids.append(int(sample(lg, opts["temperature"], opts["top_k"] or 0, gen)[0]))
        t_run = time.perf_counter() - t1
        host.wait()
        host.stop()
    except R._Failed as f:
        R._kill_workers(runtime)
        e = R.LavaRunError(f"a Lava worker failed ({opts['backend']}, {opts['granularity']}, {opts['mode']})")
        e.worker_traceback = str(f)
        raise e
    except BaseException:
        R._kill_workers(runtime)
        raise
    return {"ids": new_ids, "logits": np.stack(all_logits) if all_logits else None, "trace": traces,
            "steps_per_token": T, "n_tokens": n_tokens, "compile_s": t_compile, "run_s": t_run,
            "ms_per_token": 1e3 * t_run / max(n_tokens, 1),
            "processes": len(getattr(runtime._messaging_infrastructure, "actors", []))}
