"""Graph → Lava process network.

`build_network(graph, plan, fixed, trace)` makes: one HostProc (host program), one StageProc per
stage (fused model or the per-population SubProcessModel), an Injector (token ids in) and an
Extractor (logits out), plus one Extractor per traced population. Every model is pinned per
instance in the returned run config's `exception_proc_model_map`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ns_compile.backends.lava import arith
from ns_compile.errors import UserError
from ns_compile.ir.neurons import NEURON_TYPES


# ---------------------------------------------------------------------------------------------
# plain-data stage description (what StageProc carries; no Lava objects)
# ---------------------------------------------------------------------------------------------
@dataclass
class PopSpec:
    name: str
    kind: str
    size: int
    params: dict
    fmt: dict
    ports: tuple
    drive_index: int | None
    depth: int
    early: dict


@dataclass
class SynSpec:
    name: str
    src: str
    dst: str
    port: str
    weight: np.ndarray          # fixed: int64 mantissas M; float: float64 W
    bits: int
    weight_exp: int
    graded: bool
    delay: int


@dataclass
class StageSpec:
    name: str
    index: int
    frames: int
    period: int
    offset: int
    pops: list
    synapses: list
    directs: list               # (src, dst, port)
    readout: str
    readout_size: int
    drive_sizes: list
    trace_sizes: list
    luts: dict
    fixed: bool
    children_map: dict = field(default_factory=dict)   # filled at compile (per-population view)


def _int_array(x, what):
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise UserError(f"{what}: fixed mode needs integer values (is the graph quantized?)")
    return a.astype(np.int64)


def stage_spec(graph, plan, i: int, fixed: bool) -> StageSpec:
    st = graph.stages[i]
    sp = plan.stages[i]
    luts = {}
    if fixed:
        luts = {k: np.asarray(v, dtype=np.int64) for k, v in graph.meta.get("luts", {}).items()}
    pops = []
    for name in st.populations:
        p = graph.populations[name]
        if p.kind not in NEURON_TYPES or p.kind not in arith.STATEFUL:
            raise UserError(f"population {name}: neuron type {p.kind!r} has no Lava model")
        if fixed:
            params = {k: _int_array(v, f"{name}.{k}") for k, v in p.params.items()}
            if p.kind == "plif_selective" and not luts:
                raise UserError("graph.meta['luts'] is missing (sigmoid / softplus tables)")
        else:
            params = {k: np.asarray(v, dtype=np.float64) for k, v in p.params.items()}
        di = st.drive_targets.index(name) if name in st.drive_targets else None
        pops.append(PopSpec(name, p.kind, int(p.size), params, {k: int(v) for k, v in p.fmt.items()},
                            NEURON_TYPES[p.kind].ports, di, sp.depth[name], dict(sp.early.get(name, {}))))
    syns = []
    names = set(st.populations)
    for name in st.populations:
        for s in graph.inputs_of(name):
            if s.src not in names:
                raise UserError(f"synapse group {s.name}: source {s.src} is outside stage {st.name}")
            if s.weight is None:
                raise UserError(f"synapse group {s.name}: no weights (shape-only graph)")
            if fixed:
                b = int(s.fmt["bits"])
                M = _int_array(s.weight, s.name)
                lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
                if M.size and (M.min() < lo or M.max() > hi):
                    raise UserError(f"synapse group {s.name}: mantissas outside {b}-bit range")
                syns.append(SynSpec(s.name, s.src, s.dst, s.dst_port, M, b, int(s.weight_exp()),
                                    s.input_kind != "binary", sp.early_synapses.get(s.name, 0)))
            else:
                syns.append(SynSpec(s.name, s.src, s.dst, s.dst_port, np.asarray(s.weight, dtype=np.float64), 0, 0,
                                    s.input_kind != "binary", sp.early_synapses.get(s.name, 0)))
    directs = [(d.src, d.dst, d.dst_port) for d in graph.directs if d.dst in names]
    drive_sizes = [int(graph.populations[t].size) for t in st.drive_targets]
    trace_sizes = [(2 if arith.STATEFUL[p.kind] else 1) * p.size for p in pops]
    return StageSpec(st.name, i, int(st.frames), plan.period, sp.offset, pops, syns, directs, st.readout,
                     int(graph.populations[st.readout].size), drive_sizes, trace_sizes, luts, fixed)


# ---------------------------------------------------------------------------------------------
# per-population view (called by models.StagePopulationsModel during compile)
# ---------------------------------------------------------------------------------------------
def build_stage_population_view(proc) -> dict:
    """Children of a StageProc: one Process per population + one Dense per synapse group, wired
    to the parent's ports; their models registered in proc._ns_model_map (per instance)."""
    from lava.proc.dense.models import PyDenseModelBitAcc, PyDenseModelFloat
    from lava.proc.dense.process import Dense
    from lava.proc.prodneuron.models import PyProdNeuronModelFixed
    from lava.proc.prodneuron.process import ProdNeuron
    from lava.utils.weightutils import SignMode

    from ns_compile.backends.lava import models as M
    from ns_compile.backends.lava.processes import NEURON_PROCESSES

    spec: StageSpec = proc.proc_params["spec"]
    trace = bool(proc.proc_params["trace"])
    mm = proc._ns_model_map
    fixed = spec.fixed
    children = {}
    byname = {}
    for i, p in enumerate(spec.pops):
        cname = f"pop{i}"
        if p.kind == "product":
            exp = int(p.fmt.get("exp", p.params.get("exp", 0))) if fixed else 0
            c = ProdNeuron(shape=(p.size,), vth=0, exp=exp)
            mm[c] = PyProdNeuronModelFixed if fixed else M.PyProdNeuronFloat
        else:
            c = NEURON_PROCESSES[p.kind](shape=(p.size,), params=p.params, fmt=p.fmt, luts=spec.luts,
                                         period=spec.period, offset=spec.offset + p.depth, frames=spec.frames,
                                         early=p.early, drive=p.drive_index is not None, name=f"{spec.name}:{p.name}",
                                         rshift=arith.row_shifts(p.params) if fixed else {})   # §2.1
            mm[c] = M.POP_MODELS[(p.kind, fixed)]
        children[cname] = c
        byname[p.name] = c
        if p.drive_index is not None:
            getattr(proc, f"drv_{p.drive_index}").connect(c.drive)
        if trace:
            (c.s_out if p.kind == "product" else c.trace).connect(getattr(proc, f"tr_{i}"))
    byname[spec.readout].s_out.connect(proc.ro)
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
        byname[s.src].s_out.connect(d.s_in)
        dst = byname[s.dst]
        d.a_out.connect(getattr(dst, s.port + ("_e" if s.delay > 0 else "")))
    for src, dst, port in spec.directs:
        c = byname[dst]
        getattr(byname[src], "s_out").connect(c.a_in1 if port == "X1" else c.a_in2)
    return children


# ---------------------------------------------------------------------------------------------
# host program (runs inside the HostProc model)
# ---------------------------------------------------------------------------------------------
class HostProgram:
    """The graph's host ops executed on the schedule through `ns_compile.sim.host.run_host_op`
    (the emulator's own host arithmetic). `host_fn(op, inputs, config) -> outputs` may replace it."""

    def __init__(self, graph, plan, fixed: bool, host_fn=None):
        self.plan = plan
        self.fixed = fixed
        self.cfg = dict(graph.config)
        self.host_fn = host_fn
        self.ops = graph.host_ops
        self.stages = graph.stages
        # program → segments: seg[0] before stage 0, seg[i+1] after stage i ("sample" excluded)
        segs = [[]]
        si = 0
        for name in graph.program:
            if si < len(graph.stages) and name == graph.stages[si].name and (
                    name not in graph.host_ops or not segs[-1] or segs[-1][-1] == graph.stages[si].drive):
                segs.append([])
                si += 1
                continue
            op = graph.host_ops[name]
            if op.kind != "sample":
                segs[-1].append(name)
        if si != len(graph.stages):
            raise UserError("graph.program does not list every stage in order")
        self.segments = segs
        self.drive_depth = [[plan.stages[i].depth[t] for t in st.drive_targets] for i, st in enumerate(graph.stages)]
        self.drives = [[None] * len(st.drive_targets) for st in graph.stages]
        self.frames = [[None] * st.frames for st in graph.stages]
        self.logits = None
        self.env = {}

    def _run(self, name):
        import torch
        op = self.ops[name]
        env = self.env
        if op.kind == "embedding":
            inputs = {"ids": env["ids"]}
        else:
            inputs = {k: env[k] for k in op.inputs}
        if not self.fixed:
            inputs["dtype"] = torch.float64
        fn = self.host_fn
        if fn is None:
            from ns_compile.sim.host import run_host_op as fn
        out = fn(op, inputs, self.cfg)
        env.update(out)
        for i, st in enumerate(self.stages):
            if st.drive == name:
                outs = [o for o in op.outputs if o in out] or list(out)
                vals = [out[o] for o in outs]
                if len(vals) == 1 and len(st.drive_targets) > 1:
                    raise UserError(f"host op {name}: one drive output for {len(st.drive_targets)} targets")
                dt = np.int64 if self.fixed else np.float64
                self.drives[i] = [np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v,
                                             dtype=dt).reshape(-1) for v in vals]
        if "logits" in out:
            lg = out["logits"]
            self.logits = np.asarray(lg.detach().cpu().numpy() if hasattr(lg, "detach") else lg,
                                     dtype=np.float64).reshape(-1)

    def _segment(self, s):
        for name in self.segments[s]:
            self._run(name)

    def step(self, r, tok, ros):
        import torch
        if r == 0:
            self.env = {"ids": torch.tensor([int(round(float(np.asarray(tok).reshape(-1)[0])))], dtype=torch.long)}
            self.logits = None
            self._segment(0)
        for i, sp in enumerate(self.plan.stages):
            k = r - (sp.offset + sp.readout_depth)
            if 0 <= k < sp.frames:
                dt = torch.int64 if self.fixed else torch.float64
                self.frames[i][k] = torch.as_tensor(np.asarray(ros[i]), dtype=dt).reshape(1, -1)
                if k == sp.frames - 1:
                    self.env["F"] = torch.stack(self.frames[i])          # [K, 1, n]
                    self._segment(i + 1)

    def drive_at(self, r, i, j, zero):
        sp = self.plan.stages[i]
        lo = sp.offset + self.drive_depth[i][j]
        if lo <= r < lo + sp.frames and self.drives[i][j] is not None:
            return self.drives[i][j]
        return zero

    def output_at(self, r, n):
        if r == self.plan.logits_step and self.logits is not None:
            return self.logits
        return np.zeros(n)


# ---------------------------------------------------------------------------------------------
# the whole network
# ---------------------------------------------------------------------------------------------
@dataclass
class Network:
    host: object
    injector: object
    extractor: object
    stages: list
    trace_extractors: dict      # (stage index, population index) -> Extractor
    specs: list
    model_map: dict
    vocab: int


def vocab_size(graph) -> int:
    for op in graph.host_ops.values():
        if op.kind == "lm_head" and "E" in op.params:
            return int(np.asarray(op.params["E"]).shape[0])
    v = graph.config.get("vocab_size")
    if v is None:
        raise UserError("cannot tell the vocabulary size (no lm_head E, no config vocab_size)")
    return int(v)


def build_network(graph, plan, fixed: bool, trace: bool = False, host_fn=None, extra=None) -> Network:
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.injector import Injector, PyLoihiInjectorModel

    from ns_compile.backends.lava import models as M
    from ns_compile.backends.lava.processes import HostProc, StageProc

    model_map: dict = {}
    specs = [stage_spec(graph, plan, i, fixed) for i in range(len(graph.stages))]
    V = vocab_size(graph)
    buf = plan.period + 8
    stage_ports = [(s.readout_size, list(s.drive_sizes)) for s in specs]
    host = HostProc(host=HostProgram(graph, plan, fixed, host_fn), stage_ports=stage_ports, out_size=V,
                    name="host")
    model_map[host] = M.make_host_model(stage_ports, fixed)
    inj = Injector(shape=(1,), buffer_size=buf)
    ext = Extractor(shape=(V,), buffer_size=buf)
    model_map[inj] = PyLoihiInjectorModel
    model_map[ext] = PyLoihiExtractorModel
    inj.out_port.connect(host.tok)
    host.out.connect(ext.in_port)
    stages = []
    trace_ext = {}
    for i, spec in enumerate(specs):
        sp = StageProc(spec=spec, trace=trace, name=spec.name)
        if plan.granularity == "fused":
            model_map[sp] = M.make_fused_model(spec, fixed, trace)
        else:
            model_map[sp] = M.StagePopulationsModel
            sp._ns_model_map = model_map
        for j in range(len(spec.drive_sizes)):
            getattr(host, f"drv_{i}_{j}").connect(getattr(sp, f"drv_{j}"))
        sp.ro.connect(getattr(host, f"ro_{i}"))
        if trace:
            for j, n in enumerate(spec.trace_sizes):
                e = Extractor(shape=(n,), buffer_size=buf)
                model_map[e] = PyLoihiExtractorModel
                getattr(sp, f"tr_{j}").connect(e.in_port)
                trace_ext[(i, j)] = e
        stages.append(sp)
    return Network(host, inj, ext, stages, trace_ext, specs, model_map, V)
