"""The Nord emulator: executes a Nord IR graph (docs/fixed_point.md §7).

- quantized graph: exactly the integer arithmetic of §7 (int64 tensors; float64 GEMMs only where
  provably exact);
- float graph: the float IR interpreter (float64 by default), which reproduces the reference
  logits and proves the lowering exact; calibration runs it with a recorder.

Rows (token positions) are independent on chip, so a whole sequence runs at once (B·S rows per
stage, causal attention on the host); an incremental step is the same code with S = 1 and the
attention cache (`NordState`) holding the earlier positions' key spikes and value means. Both
give identical results. Batched torch, CPU or CUDA.

`Emulator(graph)` returns a `NordEmulator` for a Nord graph (hook in `ns_compile.sim.emulator`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ns_compile.sim import intops as I
from ns_compile.sim import nord_host as NH
from ns_compile.sim.host import as_tensor


@dataclass
class NordState:
    """The attention cache per layer ({"K": [K, B, P, D] int8 spikes, "VB": [B, P, D]}) and the
    number P of positions seen. Neuron state is not carried across tokens (§7)."""
    cache: list = field(default_factory=list)
    length: int = 0
    batch: int = 1

    def clone(self) -> "NordState":
        return NordState([{k: (v.clone() if v is not None else None) for k, v in c.items()} for c in self.cache],
                         self.length, self.batch)


class NordEmulator:
    family = "nord"

    def __init__(self, graph, device="cpu", dtype: torch.dtype = torch.float64, recorder=None):
        self.g = graph
        self.device = torch.device(device)
        self.int = bool(graph.quantized)
        self.fdtype = dtype
        self.recorder = recorder
        if graph.meta.get("shape_only"):
            raise ValueError("a shape-only graph (no weights) cannot be executed")
        self.cfg = dict(graph.config)
        self.K = int(self.cfg["K"])
        self.L = int(self.cfg["n_layers"])
        self._inputs = {p: graph.inputs_of(p) for p in graph.populations}
        self._w, self._wmax = {}, {}
        for s in graph.synapses.values():
            if self.int:
                self._w[s.name] = torch.as_tensor(np.asarray(s.weight, dtype=np.float64)).to(self.device)
                self._wmax[s.name] = int(np.abs(np.asarray(s.weight)).max()) if s.weight.size else 0
            else:
                self._w[s.name] = torch.as_tensor(np.asarray(s.weight, dtype=np.float64)).to(self.device, dtype)
        self.small = True
        self.reset_stats()

    # ---- statistics -------------------------------------------------------------------------------
    def reset_stats(self):
        self._cnt: dict = {}
        self._spk = {p: 0.0 for p in self.g.populations}
        self._n = {p: 0 for p in self.g.populations}
        self._spk_t = {p: None for p in self.g.populations}
        self.timings = {"stages_s": 0.0, "host_s": 0.0, "tokens": 0}

    def _count(self, owner, key, n):
        self._cnt[(owner, key)] = self._cnt.get((owner, key), 0) + n

    @property
    def counters(self) -> dict:
        keys = ("sat_port", "sat_state", "sat_payload", "wrap32", "port_values", "state_values")
        return {p: {k: int(self._cnt.get((p, k), 0)) for k in keys} for p in self.g.populations}

    @property
    def syn_counters(self) -> dict:
        return {s: {"wrap32": int(self._cnt.get(("syn:" + s, "wrap32"), 0)),
                    "values": int(self._cnt.get(("syn:" + s, "values"), 0))} for s in self.g.synapses}

    def activity(self, per_frame: bool = False) -> dict:
        """Measured spike rate per population (fraction of neurons firing per frame), averaged over
        frames, rows and calls; per frame index k with per_frame=True."""
        out = {}
        for p in self.g.populations:
            if not self._n[p]:
                continue
            if per_frame:
                out[p] = [round(float(x), 6) for x in (self._spk_t[p] / self._n[p]).cpu()]
            else:
                out[p] = round(float(self._spk[p]) / self._n[p] / self.K, 6)
        return out

    # ---- state ------------------------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> NordState:
        return NordState([{"K": None, "VB": None} for _ in range(self.L)], 0, batch)

    def _param(self, pop, key):
        return as_tensor(pop.params[key], self.device, torch.int64 if self.int else self.fdtype)

    def _rec(self, name, x):
        if self.recorder is not None:
            self.recorder(name, x)

    # ---- synapse groups (§2) ---------------------------------------------------------------------------
    def _synapse(self, s, x: torch.Tensor) -> torch.Tensor:
        if not self.int:
            a = torch.matmul(x.to(self.fdtype), self._w[s.name].t())
            self._rec(f"syn:{s.name}", a)
            return a
        f = s.fmt
        b = f["bits"]
        xmax = 1 if s.input_kind == "binary" else (1 << 15) - 1
        acc = I.exact_matmul(x, self._w[s.name], self._wmax[s.name], xmax) << (9 - b)
        w = I.wrap32(acc)
        nw = (w != acc).sum()
        self._count("syn:" + s.name, "wrap32", nw)
        self._count("syn:" + s.name, "values", acc.numel())
        self._count(s.dst, "wrap32", nw)
        return I.shift(w, f["f_W"] + f["f_S"] + 9 - b, f["f_A"])

    def _sat(self, pop, key, x):
        y = I.sat(x, 24)
        self._count(pop.name, key, (y != x).sum())
        return y

    # ---- lif_nord (§7.2) --------------------------------------------------------------------------------
    def _lif(self, pop, Iin: torch.Tensor | None, rows: int):
        """Iin: port I sums [K, N, n] (or None). Returns spikes [K, N, n] (int64 0/1 or float), V [K, N, n]."""
        K, n = self.K, pop.size
        casc = [s for s in self._inputs[pop.name] if s.dst_port == "C"]
        dt = torch.int64 if self.int else self.fdtype
        BS, BM, TH, VR = (self._param(pop, k) for k in ("BS", "BM", "TH", "VRESET"))
        RT = int(np.asarray(pop.params["RT"]).reshape(-1)[0])
        U = torch.zeros(rows, n, dtype=dt, device=self.device)
        V = torch.zeros_like(U)
        R = torch.zeros(rows, n, dtype=torch.int64, device=self.device)
        if Iin is None:
            Iin = torch.zeros(K, rows, n, dtype=dt, device=self.device)
        elif self.int:
            Iin = self._sat(pop, "sat_port", Iin)
            self._count(pop.name, "port_values", Iin.numel())
        else:
            self._rec(f"port:{pop.name}.I", Iin)
        S = torch.empty(K, rows, n, dtype=dt, device=self.device)
        Vs = torch.empty_like(S)
        Cs = []
        s = None
        for k in range(K):
            if k == 0 or not casc:
                C = None
            else:
                C = sum(self._synapse(c, s) for c in casc)
                if self.int:
                    C = self._sat(pop, "sat_port", C)
                else:
                    Cs.append(C)
            if self.int:
                U = self._sat(pop, "sat_state", I.decay(U, BS) + Iin[k] + (0 if C is None else C))
                Vt = self._sat(pop, "sat_state", I.decay(V, BM) + U)
            else:
                U = BS * U + Iin[k] + (0 if C is None else C)
                Vt = BM * V + U
                self._rec(f"U:{pop.name}", U)
                self._rec(f"Vt:{pop.name}", Vt)
            V = torch.where(R > 0, VR.expand_as(Vt), Vt)
            sb = V >= TH
            if self.int:
                V = self._sat(pop, "sat_state", V - torch.where(sb, TH.expand_as(V), torch.zeros_like(V)))
            else:
                V = V - TH * sb
            R = torch.where(sb, torch.full_like(R, RT), (R - 1).clamp(min=0))
            s = sb.to(dt)
            S[k] = s
            Vs[k] = V
        if self.int:
            self._count(pop.name, "state_values", 2 * Vs.numel())
        else:
            self._rec(f"V:{pop.name}", Vs)
            if Cs:
                self._rec(f"port:{pop.name}.C", torch.stack(Cs))
        per_t = S.to(torch.float64).mean(dim=(1, 2))
        self._spk[pop.name] += float(per_t.sum())
        self._n[pop.name] += 1
        self._spk_t[pop.name] = per_t if self._spk_t[pop.name] is None else self._spk_t[pop.name] + per_t
        return S, Vs

    def run_stage(self, stage_name: str, drive: torch.Tensor, rows: int | None = None, trace: bool = False):
        """K frames of one stage from its drive op's per-frame output [K, N, n] (port I of the drive
        targets, or the payload of the host-fed synapse groups). Returns {population: (S, V)}."""
        st = self.g.stage(stage_name)
        rows = drive.shape[1] if rows is None else rows
        out = {}
        for name in st.populations:
            pop = self.g.populations[name]
            Iin = drive if name in st.drive_targets else None
            for s in self._inputs[name]:
                if s.dst_port != "I":
                    continue
                x = drive if s.src.startswith("host:") else out[s.src][0]
                a = self._synapse(s, x)
                Iin = a if Iin is None else Iin + a
            out[name] = self._lif(pop, Iin, rows)
        return out

    # ---- host ---------------------------------------------------------------------------------------
    def _rec_host(self, name, d: dict):
        if self.recorder is None:
            return
        for k, v in d.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                self._rec(f"host:{name}.{k}", v)

    def run_host(self, name: str, env: dict, state: NordState, B: int, S: int, trace: dict | None = None):
        """One Nord host op (§7.3) on `env` (keys: ids [N], X [K, N, D], drive [K, N, n], stage_out
        {population: (spikes, V)} of the last stage, Y, logits), in place. Shared with the Lava host."""
        g = self.g
        op = g.host_ops[name]
        K = self.K
        N = B * S
        k = op.kind
        want = trace is not None
        so = env.get("stage_out")
        if k == "nord_encoder":
            env["drive"] = NH.encoder(op, env["ids"].reshape(N), self.fdtype)
            self._rec_host(name, {"drive": env["drive"]})
        elif k == "nord_spike_residual":
            env["X"] = NH.spike_residual(op, so[g.stage(op.meta["stage"]).readout][0], self.fdtype)
        elif k == "nord_layernorm":
            env["drive"] = NH._layernorm(op, env["X"], self.cfg)
            env["Y:" + name] = env["drive"]
            self._rec_host(name, {"Y": env["drive"]})
            if want:
                trace.setdefault("host", {})[name] = {"Y": env["drive"].reshape(K, B, S, -1)}
        elif k == "nord_attention":
            l = int(op.meta["layer"])
            X = env["X"]
            D = X.shape[-1]
            r = NH.attention(op, X.reshape(K, B, S, D), env["drive"].reshape(K, B, S, D),
                             so[op.meta["q"]][0].reshape(K, B, S, D), so[op.meta["k"]][0].reshape(K, B, S, D),
                             state.cache[l], self.cfg, want=want)
            env["X"] = r["X"].reshape(K, N, D)
            self._rec_host(name, {"X": env["X"]})
            if self.recorder is not None and not self.int:
                self._rec(f"host:{name}.VB", state.cache[l]["VB"][:, -S:])
            if want:
                trace.setdefault("host", {})[name] = {kk: r[kk] for kk in ("scores", "attn", "O", "VB", "X")}
        elif k == "nord_ffn_residual":
            env["X"] = NH.ffn_residual(op, env["X"], so[g.stage(op.meta["stage"]).readout][0])
            self._rec_host(name, {"X": env["X"]})
            if want:
                trace.setdefault("host", {})[name] = {"X": env["X"].reshape(K, B, S, -1)}
        elif k == "nord_gain_drive":
            env["drive"] = NH.gain_drive(op, env["X"])
            self._rec_host(name, {"drive": env["drive"]})
        elif k == "nord_readout":
            sv = so[g.stage(op.meta["stage"]).readout]
            r = NH.readout(op, sv[0], sv[1], self.cfg)
            env["Y"] = r["Y"]
            self._rec_host(name, {"Y": r["Y"], "R": r["R"], "M": r["M"]})
        elif k == "nord_lm_head":
            env["logits"] = NH.lm_head(op, env["Y"])["logits"]
        elif k == "sample":
            pass
        elif k.startswith("nord4_"):
            self._run_host_v4(name, op, env, state, B, S, trace)
        else:
            raise ValueError(f"Nord emulator: unknown host op kind {k!r}")

    def _run_host_v4(self, name, op, env, state, B, S, trace):
        """The Nord v4.2 host ops (docs/fixed_point.md §7.5, ns_compile.sim.nord_host_v4)."""
        from ns_compile.sim import nord_host_v4 as N4
        g, K, N, k = self.g, self.K, B * S, op.kind
        want = trace is not None
        so = env.get("stage_out")
        if k == "nord4_payload":
            env["drive"] = N4.payload(op, env["X"])
            self._rec_host(name, {"Y": env["drive"]})
        elif k == "nord4_attention":
            l = int(op.meta["layer"])
            X = env["X"]
            D = X.shape[-1]
            r = N4.attention(op, X.reshape(K, B, S, D), env["drive"].reshape(K, B, S, D),
                             so[op.meta["q"]][0].reshape(K, B, S, D), so[op.meta["k"]][0].reshape(K, B, S, D),
                             state.cache[l], self.cfg, want=want)
            env["X"] = r["X"].reshape(K, N, D)
            if self.recorder is not None and not self.int:
                self._rec_host(name, {"X": env["X"], "VB": state.cache[l]["VB"][:, -S:],
                                      "QK": torch.cat([state.cache[l]["K"].abs().amax().reshape(1)]),
                                      "SC": r["_sc"][torch.isfinite(r["_sc"])]})
            if want:
                trace.setdefault("host", {})[name] = {kk: r[kk] for kk in ("scores", "attn", "O", "VB", "X")
                                                      if kk in r}
                if "scores_pre" in r:
                    trace["host"][name]["scores_pre"] = r["scores_pre"]
        elif k == "nord4_moe_gate":
            r = N4.moe_gate(op, so[g.stage(op.meta["stage"]).readout][0], env["Y:" + op.meta["norm"]])
            env["drive"] = r["drive"]
            env["moe:" + name] = (r["idx"], r["W"])
            self._rec_host(name, {"SC": r["scores"]})
            if want:
                trace.setdefault("host", {})[name] = {kk: r[kk].reshape(B, S, -1) for kk in ("idx", "W", "scores")}
        elif k == "nord4_moe_residual":
            idx, w = env["moe:" + op.meta["gate"]]
            env["X"] = N4.moe_residual(op, env["X"], so[g.stage(op.meta["stage"]).readout][0], idx, w)
            self._rec_host(name, {"X": env["X"]})
            if want:
                trace.setdefault("host", {})[name] = {"X": env["X"].reshape(K, B, S, -1)}
        elif k == "nord4_memory":
            r = N4.memory_read(op, env["X"], so[op.meta["gate"]][0], so[op.meta["mem"]][1], self.cfg, want=want)
            env["X"] = r["X"]
            self._rec_host(name, {"X": env["X"], "U": r["U"], "A": r["A"]})
            if want:
                trace.setdefault("host", {})[name] = {"X": env["X"].reshape(K, B, S, -1),
                                                      "attn": r["attn"].reshape(K, B, S, -1)}
        else:
            raise ValueError(f"Nord emulator: unknown host op kind {k!r}")

    def run(self, ids: torch.Tensor, state: NordState, trace: dict | None = None) -> torch.Tensor:
        """ids [B, S] (the next S positions after state.length) → logits [B, S, V] float32 (device).
        With a `trace` dict: per stage {population: {"V", "P"}} ([K, B, S, n]) and host values."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        B, S = ids.shape
        N = B * S
        K = self.K
        t0 = time.perf_counter()
        th = 0.0
        env = {"ids": ids.reshape(N)}
        for name in self.g.program:
            if name in self.g.host_ops:
                t1 = time.perf_counter()
                self.run_host(name, env, state, B, S, trace)
                th += time.perf_counter() - t1
            else:
                env["stage_out"] = self.run_stage(name, env["drive"], N)
                if trace is not None:
                    trace[name] = {p: {"V": v.reshape(K, B, S, -1), "P": s_.reshape(K, B, S, -1)}
                                   for p, (s_, v) in env["stage_out"].items()}
        state.length += S
        self.timings["host_s"] += th
        self.timings["stages_s"] += time.perf_counter() - t0 - th
        self.timings["tokens"] += S
        return env["logits"].reshape(B, S, -1)

    # ---- token-level API (like Emulator) ---------------------------------------------------------
    def step(self, ids, state: NordState, trace: bool = False):
        """One position per row: ids [B] → (logits float32 [B, V], state[, trace])."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1, 1)
        tr = {} if trace else None
        lg = self.run(ids, state, tr)[:, 0]
        return (lg, state, tr) if trace else (lg, state)

    def threads(self):
        import contextlib

        @contextlib.contextmanager
        def one():
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(n)
        return one() if self.device.type == "cpu" else contextlib.nullcontext()

    @torch.inference_mode()
    def forward(self, ids, state: NordState | None = None, trace: dict | None = None) -> torch.Tensor:
        """ids [B, S] → logits [B, S, V] float32 (CPU), the whole sequence at once (from `state`)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if state is None:
            state = self.new_state(ids.shape[0])
        return self.run(ids, state, trace).float().cpu()

    @torch.inference_mode()
    def generate(self, prompt_ids, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 seed: int | None = 0, eos_token_id: int | None = None, return_logits: bool = False):
        """Prefill the prompt (one pass), then one position at a time from the cache. Batch 1."""
        from ns_compile.sim.host import sample
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else int(seed))
        state = self.new_state(1)
        last = self.run(torch.tensor([[int(t) for t in prompt_ids]]), state)[:, -1].float().cpu()
        new: list[int] = []
        steps = [last[0]]
        while len(new) < max_new_tokens:
            tok = int(sample(last, temperature, top_k, gen)[0])
            new.append(tok)
            if len(new) >= max_new_tokens or (eos_token_id is not None and tok == eos_token_id):
                break
            last = self.run(torch.tensor([[tok]]), state)[:, -1].float().cpu()
            steps.append(last[0])
        if return_logits:
            return new, torch.stack(steps)
        return new
