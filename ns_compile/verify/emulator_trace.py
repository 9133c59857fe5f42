"""Per-frame trace of the integer emulator (`ns_compile.sim.Emulator`) in the raw form that
`stages.fill_from_integer_run` turns into a Trace.

The emulator's own trace gives V (stateful populations) and P (payload / output) per frame.
Spikes are observed without touching its arithmetic: `_SpikeObserver` sees the two `_sat_state`
calls of every PLIF frame (V_pre, then V after the reset) and derives s = [V_pre ≥ θ] from them
(plif_static: θ = TH; plif_selective: θ(t) ≥ VTHMIN > 0, so a spike is exactly V ≠ V_pre). The
observed V is checked against the emulator's trace; on any mismatch spikes are left out rather
than guessed. When the emulator's trace carries spikes itself ("S"), those are used.
"""
from __future__ import annotations

import numpy as np
import torch


def _observer_class():
    from ns_compile.sim import Emulator

    class _SpikeObserver(Emulator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._calls: dict[str, list] = {}

        def _sat_state(self, pop, x):
            y = super()._sat_state(pop, x)
            self._calls.setdefault(pop.name, []).append(y)
            return y

        def take_spikes(self, name: str, V: torch.Tensor):
            """Spikes [K, B, n] of population `name` for the frames just run, or None."""
            calls = self._calls.pop(name, [])
            K = V.shape[0]
            if len(calls) != 2 * K:
                return None
            pre = torch.stack(calls[0::2])
            post = torch.stack(calls[1::2])
            if not torch.equal(post, V.to(post.dtype)):
                return None
            pop = self.g.populations[name]
            if pop.kind == "plif_static":
                TH = torch.as_tensor(np.asarray(pop.params["TH"]), dtype=pre.dtype, device=pre.device)
                return pre >= TH
            if pop.kind == "plif_selective":
                vmin = int(np.asarray(pop.params["VTHMIN"]).reshape(-1)[0])
                return (pre != post) if vmin > 0 else None
            return None

    return _SpikeObserver


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def run_emulator(graph, ids: np.ndarray, device: str = "cpu", max_new_tokens: int = 0) -> dict:
    """Run `graph` on ids [B, T] token by token with the emulator's trace; returns
    {"logits", "populations": {name: {"V", "out", "spikes"}}, "saturation", "host", "integer"}."""
    Emu = _observer_class()
    emu = Emu(graph, device=device)
    B, T = ids.shape
    state = emu.new_state(B)
    per_pop: dict[str, dict[str, list]] = {}
    host: dict[str, list] = {}
    logits = []
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    with torch.inference_mode():
        for t in range(T):
            lg, state, tr = emu.step(ids_t[:, t], state, trace=True)
            logits.append(_np(lg).astype(np.float32))
            for stage_name, pops in tr.items():
                if stage_name == "host":
                    for op, outs in pops.items():
                        if graph.host_ops[op].kind == "ponder_residual" and outs.get("H") is not None:
                            host.setdefault(op, []).append(_np(outs["H"]))
                    continue
                for name, fields in pops.items():
                    slot = per_pop.setdefault(name, {})
                    V = fields.get("V")
                    if V is not None:
                        slot.setdefault("V", []).append(_np(V))
                        S = fields.get("S")
                        if S is None and emu.int:
                            S = emu.take_spikes(name, V)
                        if S is not None:
                            slot.setdefault("spikes", []).append(_np(S).astype(np.uint8))
                    else:
                        slot.setdefault("out", []).append(_np(fields["P"]))
                    emu._calls.pop(name, None)
    pops_out = {}
    for name, fields in per_pop.items():
        # per token [K, B, n] -> [B, T, K, n]
        pops_out[name] = {f: np.stack(v, axis=0).transpose(2, 0, 1, 3) for f, v in fields.items()
                          if len(v) == T}
    sat = {p: {k: int(v) for k, v in c.items() if not k.endswith("_values")} for p, c in emu.counters.items()}
    host_out = {}
    for op, vals in host.items():
        key = _residual_key(op)
        arr = np.stack(vals, axis=1)          # [B, T, D]
        frac = _host_frac(graph, op) if emu.int else None
        if emu.int and frac is None:
            continue                            # unknown units: leave it out rather than guess
        host_out[key] = {"value": arr, "frac": frac} if emu.int else arr
    greedy = []
    if max_new_tokens > 0:                       # row 0, from a fresh state (the emulator's own generate)
        greedy = emu.generate([int(x) for x in ids[0]], max_new_tokens=max_new_tokens, temperature=0.0)
    return {"logits": np.stack(logits, axis=1), "populations": pops_out, "saturation": sat, "host": host_out,
            "integer": bool(emu.int), "greedy": greedy}


def _residual_key(op: str) -> str:
    from ns_compile.verify.keys import _IR_HOST_RE

    m = _IR_HOST_RE.match(op)
    return f"layers.{m.group(1)}.{m.group(2)}.residual" if m else op


def _host_frac(graph, op: str):
    for name in (op, "embed"):
        h = graph.host_ops.get(name)
        if h is not None:
            for k in ("H", "f_H"):
                if k in h.fmt:
                    return int(h.fmt[k])
    return None
