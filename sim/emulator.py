"""The emulator: executes an IR Graph token by token.

- a quantized graph (`graph.quantized`): EXACTLY the integer arithmetic of docs/fixed_point.md,
  int64 tensors (float64 GEMMs only where provably exact, `intops.exact_matmul`);
- a float graph: the float IR interpreter (float64 by default), which reproduces the reference
  model and proves the lowering/folding exact; calibration runs it with a recorder.

Both are vectorised over a batch of rows, run on CPU or CUDA and carry the membrane state across
tokens (`EmuState`), so prefill + incremental steps equal one full run.

A stage is evaluated population by population over its K frames (docs/fixed_point.md §6: no
feedback inside a stage, so this equals frame-by-frame evaluation).

Per-stage API for backends: `Emulator.run_stage(stage_name, drive, state, trace=False)` →
`(readouts [K, B, n], new_state[, trace])`; host ops through `ns_compile.sim.host.run_host_op`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ns_compile.sim import intops as I
from ns_compile.sim.host import as_tensor, run_host_op

STATEFUL = ("plif_static", "plif_selective")


@dataclass
class EmuState:
    """Carried membrane potentials: population name -> [B, n] (int64 or float), zero per sequence."""
    V: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: int = 1

    def clone(self) -> "EmuState":
        return EmuState({k: v.clone() for k, v in self.V.items()}, self.batch)


class Emulator:
    def __new__(cls, graph=None, *args, **kwargs):
        # Nord graphs (docs/fixed_point.md §7) run on their own emulator (ns_compile.sim.nord)
        if cls is Emulator and getattr(graph, "family", None) == "nord":
            from ns_compile.sim.nord import NordEmulator
            return NordEmulator(graph, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, graph, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 recorder=None):
        self.g = graph
        self.device = torch.device(device)
        self.int = bool(graph.quantized)
        self.fdtype = dtype                       # float mode compute dtype
        self.recorder = recorder                  # callable(name, tensor) (float mode calibration)
        if graph.meta.get("shape_only"):
            raise ValueError("a shape-only graph (no weights) cannot be executed")
        self.cfg = dict(graph.config)
        self._inputs = {p: graph.inputs_of(p) for p in graph.populations}
        self._directs = {p: graph.directs_into(p) for p in graph.populations}
        self._w = {}
        self._wmax = {}
        for s in graph.synapses.values():
            if self.int:
                self._w[s.name] = torch.as_tensor(np.asarray(s.weight, dtype=np.float64)).to(self.device)
                self._wmax[s.name] = int(np.abs(np.asarray(s.weight)).max()) if s.weight.size else 0
            else:
                self._w[s.name] = torch.as_tensor(np.asarray(s.weight)).to(self.device, dtype)
        # small graphs run faster single-threaded (intra-op threads only add overhead there)
        self.small = max([s.fan_in * s.fan_out for s in graph.synapses.values()] + [0]) < (1 << 20)
        # docs/fixed_point.md §2.1: per-neuron port shifts RS_<port> (quantized NeuronSpark graphs)
        self._rs = {}
        if self.int:
            for p in graph.populations.values():
                rs = {k[3:]: torch.as_tensor(np.asarray(v, dtype=np.int64).reshape(-1)).to(self.device)
                      for k, v in p.params.items() if k.startswith("RS_")}
                if rs:
                    self._rs[p.name] = rs
        luts = graph.meta.get("luts", {})
        self._lut = {k: torch.as_tensor(np.asarray(v, dtype=np.int64)).to(self.device) for k, v in luts.items()}
        self.reset_stats()

    # ---- statistics ------------------------------------------------------------------------------
    def reset_stats(self):
        """Saturation / overflow counters and activity per population (and per synapse group).
        Kept as device tensors (no host sync per frame); read through `counters` / `syn_counters`."""
        self._cnt: dict[tuple, torch.Tensor | int] = {}
        self._act_nz = {p: None for p in self.g.populations}
        self._act_n = {p: 0 for p in self.g.populations}
        self.timings = {"stages_s": 0.0, "host_s": 0.0, "tokens": 0}

    def _count(self, owner: str, key: str, n):
        k = (owner, key)
        self._cnt[k] = self._cnt.get(k, 0) + n

    @property
    def counters(self) -> dict:
        """Per population: sat_port (port sums clipped to 24 bits), sat_state (V_pre / V clipped),
        sat_payload (payload / out clipped), wrap32 (synapse accumulators into it that wrapped),
        port_values, state_values (how many values were checked)."""
        keys = ("sat_port", "sat_state", "sat_payload", "wrap32", "port_values", "state_values")
        return {p: {k: int(self._cnt.get((p, k), 0)) for k in keys} for p in self.g.populations}

    @property
    def syn_counters(self) -> dict:
        return {s: {"wrap32": int(self._cnt.get(("syn:" + s, "wrap32"), 0)),
                    "values": int(self._cnt.get(("syn:" + s, "values"), 0))} for s in self.g.synapses}

    def activity(self, per_frame: bool = False) -> dict:
        """Fraction of nonzero payloads per population (mean over frames, tokens and rows), or per
        frame index k when `per_frame`."""
        out = {}
        for p, nz in self._act_nz.items():
            if nz is None or self._act_n[p] == 0:
                continue
            f = (nz / self._act_n[p]).cpu()
            out[p] = [round(float(x), 6) for x in f] if per_frame else round(float(f.mean()), 6)
        return out

    # ---- state -----------------------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> EmuState:
        dt = torch.int64 if self.int else self.fdtype
        V = {p.name: torch.zeros(batch, p.size, dtype=dt, device=self.device)
             for p in self.g.populations.values() if p.kind in STATEFUL}
        return EmuState(V, batch)

    def _param(self, pop, key):
        dt = torch.int64 if self.int else self.fdtype
        return as_tensor(pop.params[key], self.device, dt)

    def _rec(self, name, x):
        if self.recorder is not None:
            self.recorder(name, x)

    # ---- synapse groups ---------------------------------------------------------------------------
    def _synapse(self, s, src_payload: torch.Tensor) -> torch.Tensor:
        """§2: A = shift(wrap32(ACC · 2^(9−b)), (f_W + f_S + 9 − b) → f_A); src_payload [K, B, n_in]."""
        if not self.int:
            a = torch.matmul(src_payload, self._w[s.name].t())
            self._rec(f"syn:{s.name}", a)
            return a
        f = s.fmt
        b = f["bits"]
        xmax = (1 << (self.g.populations[s.src].fmt.get("payload_bits", 24) - 1)) - 1
        acc = I.exact_matmul(src_payload, self._w[s.name], self._wmax[s.name], xmax) << (9 - b)
        w = I.wrap32(acc)
        nwrap = (w != acc).sum()
        self._count("syn:" + s.name, "wrap32", nwrap)
        self._count("syn:" + s.name, "values", acc.numel())
        self._count(s.dst, "wrap32", nwrap)
        return I.shift(w, f["f_W"] + f["f_S"] + 9 - b, f["f_A"])

    def _port(self, pop, port, ports):
        x = ports.get(port)
        if x is None:
            return None
        if self.int:
            y = I.sat(x, 24)
            self._count(pop.name, "sat_port", (y != x).sum())
            self._count(pop.name, "port_values", x.numel())
            return y
        self._rec(f"port:{pop.name}.{port}", x)
        return x

    def _sat_state(self, pop, x):
        y = I.sat(x, 24)
        self._count(pop.name, "sat_state", (y != x).sum())
        return y

    def _payload(self, pop, V):
        """out = sat_P(shift(V, f_V → f_P))."""
        if not self.int:
            return V
        f = pop.fmt
        x = I.shift(V, f["V"], f["P"])
        y = I.sat(x, f.get("payload_bits", 16))
        self._count(pop.name, "sat_payload", (y != x).sum())
        return y

    # ---- neuron types -------------------------------------------------------------------------------
    def _plif_static(self, pop, ports, V0):
        K = ports["I"].shape[0]
        Iin = self._port(pop, "I", ports)
        B = self._param(pop, "B")
        TH = self._param(pop, "TH")
        V = V0
        Vs = []
        for k in range(K):
            if self.int:
                vpre = self._sat_state(pop, I.decay(V, B) + Iin[k])
                s = vpre >= TH
                V = self._sat_state(pop, vpre - torch.where(s, TH, torch.zeros_like(TH)))
            else:
                vpre = B * V + Iin[k]
                s = vpre >= TH
                V = vpre - TH * s
            Vs.append(V)
        Vs = torch.stack(Vs)
        if self.int:
            self._count(pop.name, "state_values", 2 * Vs.numel())
        else:
            self._rec(f"V:{pop.name}", Vs)
        return Vs, self._payload(pop, Vs), V

    def _plif_selective(self, pop, ports, V0):
        K = ports["I"].shape[0]
        Iin = self._port(pop, "I", ports)
        XB, XA, XT = (self._port(pop, p, ports) for p in ("XB", "XA", "XT"))
        BB, BA, BT, VTHMIN = (self._param(pop, k) for k in ("BB", "BA", "BT", "VTHMIN"))
        if self.int:
            f = pop.fmt
            Bt = I.lut_sigmoid(I.sat(XB + BB, 24), f["XB"], self._lut["sigmoid"])
            At = I.lut_softplus(I.sat(XA + BA, 24), f["XA"], self._lut["softplus"])
            Tt = I.sat(VTHMIN[0] + I.shift(I.sat(XT + BT, 24).abs(), f["XT"], f["V"]), 24)
            U = I.sat(I.shift(At * Iin, 12 + f["I"], f["V"]), 24)
        else:
            Bt = torch.sigmoid(XB + BB)
            At = torch.nn.functional.softplus(XA + BA)
            Tt = VTHMIN[0] + (XT + BT).abs()
            U = At * Iin
        V = V0
        Vs = []
        for k in range(K):
            if self.int:
                vpre = self._sat_state(pop, I.decay(V, Bt[k]) + U[k])
                s = vpre >= Tt[k]
                V = self._sat_state(pop, vpre - torch.where(s, Tt[k], torch.zeros_like(V)))
            else:
                vpre = Bt[k] * V + U[k]
                s = vpre >= Tt[k]
                V = vpre - Tt[k] * s
            Vs.append(V)
        Vs = torch.stack(Vs)
        if self.int:
            self._count(pop.name, "state_values", 2 * Vs.numel())
        else:
            self._rec(f"V:{pop.name}", Vs)
            self._rec(f"U:{pop.name}", U)
            self._rec(f"T:{pop.name}", Tt)
        return Vs, self._payload(pop, Vs), V

    def _gated_readout(self, pop, ports):
        R, G, Q = (self._port(pop, p, ports) for p in ("R", "G", "Q"))
        if self.int:
            f = pop.fmt
            g = I.lut_sigmoid(G, f["G"], self._lut["sigmoid"])
            x = I.shift(R * g, f["R"] + 12, f["F"]) + I.shift(Q, f["Q"], f["F"])
            y = I.sat(x, 24)
            self._count(pop.name, "sat_payload", (y != x).sum())
            return y
        out = R * torch.sigmoid(G) + Q
        self._rec(f"out:{pop.name}", out)
        return out

    def _product(self, pop, ports):
        X1, X2 = ports["X1"], ports["X2"]
        if self.int:
            return I.wrap32(X1 * X2) >> int(pop.fmt["exp"])
        out = X1 * X2
        self._rec(f"out:{pop.name}", out)
        return out

    def _accumulate(self, pop, ports):
        A = ports["A"]
        if self.int:
            y = I.sat(A, 24)
            self._count(pop.name, "sat_payload", (y != A).sum())
            return y
        self._rec(f"out:{pop.name}", A)
        return A

    # ---- stages -------------------------------------------------------------------------------------
    def run_stage(self, stage_name: str, drive: torch.Tensor, state: EmuState, trace: bool = False):
        """K frames of one stage from a constant host drive [B, n_target] (integer at the target's
        f_V, or float). Returns (readouts [K, B, n], new_state) and, with trace=True, a third value:
        {population: {"V": [K, B, n] (stateful), "P": [K, B, n] payload / out}} (the integer
        states and payloads of every frame)."""
        st = self.g.stage(stage_name)
        K = st.frames
        new = EmuState(dict(state.V), state.batch)
        pay: dict[str, torch.Tensor] = {}
        tr = {}
        for name in st.populations:
            pop = self.g.populations[name]
            ports: dict[str, torch.Tensor] = {}
            if name in st.drive_targets:
                ports["I"] = drive.unsqueeze(0).expand(K, *drive.shape)
            syn: dict[str, torch.Tensor] = {}
            for s in self._inputs[name]:
                a = self._synapse(s, pay[s.src])
                syn[s.dst_port] = a if s.dst_port not in syn else syn[s.dst_port] + a
            for port, a in syn.items():        # §2.1: the port sum >> RS, before the drive and sat_24
                r = self._rs.get(name, {}).get(port)
                if r is not None:
                    a = a >> r
                ports[port] = a if port not in ports else ports[port] + a
            for d in self._directs[name]:
                ports[d.dst_port] = pay[d.src]
            Vs = None
            if pop.kind == "plif_static":
                Vs, P, new.V[name] = self._plif_static(pop, ports, state.V[name])
            elif pop.kind == "plif_selective":
                Vs, P, new.V[name] = self._plif_selective(pop, ports, state.V[name])
            elif pop.kind == "gated_readout":
                P = self._gated_readout(pop, ports)
            elif pop.kind == "product":
                P = self._product(pop, ports)
            elif pop.kind == "accumulate":
                P = self._accumulate(pop, ports)
            else:
                raise ValueError(f"emulator: unknown neuron type {pop.kind!r}")
            pay[name] = P
            nz = (P != 0).flatten(1).to(torch.float64).mean(1)
            self._act_nz[name] = nz if self._act_nz[name] is None else self._act_nz[name] + nz
            self._act_n[name] += 1
            if trace:
                tr[name] = {"P": P} if Vs is None else {"V": Vs, "P": P}
        if trace:
            return pay[st.readout], new, tr
        return pay[st.readout], new

    # ---- tokens -------------------------------------------------------------------------------------
    def host(self, name: str, inputs: dict) -> dict:
        op = self.g.host_ops[name]
        if not self.int:
            inputs = {**inputs, "dtype": self.fdtype}
        out = run_host_op(op, inputs, self.cfg)
        if self.recorder is not None:
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    self._rec(f"host:{name}.{k}", v)
        return out

    def step(self, ids: torch.Tensor, state: EmuState, trace: bool = False):
        """One token per row: ids [B] → (logits float32 [B, V], state updated in place[, trace]).
        trace: {stage: {population: {"V", "P"}}, "host": {op: outputs}}."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(-1)
        t0 = time.perf_counter()
        th = 0.0
        H = None
        logits = None
        drive = None
        traces = {"host": {}} if trace else None
        for name in self.g.program:
            if name in self.g.host_ops:
                op = self.g.host_ops[name]
                t1 = time.perf_counter()
                if op.kind == "embedding":
                    H = self.host(name, {"ids": ids})["H"]
                elif op.kind == "rmsnorm_drive":
                    drive = self.host(name, {"H": H})["drive"]
                elif op.kind == "ponder_residual":
                    H = self.host(name, {"H": H, "F": F})["H"]
                elif op.kind == "decode":
                    Y = self.host(name, {"F": F})["Y"]
                elif op.kind == "lm_head":
                    logits = self.host(name, {"Y": Y})["logits"]
                elif op.kind == "sample":
                    pass                           # sampling is the caller's (generate)
                if trace:
                    traces["host"][name] = {"H": H, "drive": drive}
                th += time.perf_counter() - t1
            else:
                r = self.run_stage(name, drive, state, trace=trace)
                F = r[0]
                state.V.update(r[1].V)
                if trace:
                    traces[name] = r[2]
        self.timings["host_s"] += th
        self.timings["stages_s"] += time.perf_counter() - t0 - th
        self.timings["tokens"] += 1
        if trace:
            return logits, state, traces
        return logits, state

    def threads(self):
        """Context: single intra-op thread for small graphs on CPU (faster there)."""
        import contextlib

        @contextlib.contextmanager
        def one():
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(n)
        return one() if (self.small and self.device.type == "cpu") else contextlib.nullcontext()

    @torch.inference_mode()
    def forward(self, ids, state: EmuState | None = None) -> torch.Tensor:
        """ids [B, T] → logits [B, T, V] float32 (CPU), token by token from `state` (fresh when None)."""
        with self.threads():
            return self._forward(ids, state)

    def _forward(self, ids, state):
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if state is None:
            state = self.new_state(ids.shape[0])
        out = []
        for t in range(ids.shape[1]):
            lg, state = self.step(ids[:, t], state)
            out.append(lg.float().cpu())
        return torch.stack(out, dim=1)

    @torch.inference_mode()
    def generate(self, prompt_ids, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 seed: int | None = 0, eos_token_id: int | None = None) -> list[int]:
        """Prefill the prompt token by token, then sample one token at a time from the carried state.
        Returns the new ids (EOS included when produced). Batch 1."""
        with self.threads():
            return self._generate(prompt_ids, max_new_tokens, temperature, top_k, seed, eos_token_id)

    def _generate(self, prompt_ids, max_new_tokens, temperature, top_k, seed, eos_token_id):
        from ns_compile.sim.host import sample
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else int(seed))
        state = self.new_state(1)
        last = None
        for t in prompt_ids:
            last, state = self.step(torch.tensor([int(t)]), state)
        new: list[int] = []
        while len(new) < max_new_tokens:
            tok = int(sample(last, temperature, top_k, gen)[0])
            new.append(tok)
            if len(new) >= max_new_tokens or (eos_token_id is not None and tok == eos_token_id):
                break
            last, state = self.step(torch.tensor([tok]), state)
        return new
