"""Nord stages for `compare` / `trace` (docs/compare.md "Nord").

Canonical keys of a Nord trace are the IR population names, which are the reference's module
names: `input_lif`, `blocks.{l}.resonance.lif_q|lif_k`, `blocks.{l}.ffn.lif1|lif2`, `readout_lif`
(per frame: `spikes`, and `v` where the stage has the membrane — the reference records it for
input_lif and readout_lif, the integer stages for every population), plus the residual stream
after each block `blocks.{l}.out` (kind "host", per frame, field `out`). Spike trains are
compared by agreement / Hamming distance; the reference's fixture-named intermediates
(`handle.trace`) are mapped here.
"""
from __future__ import annotations

import numpy as np

from ns_compile.verify.trace import Trace


def _frames(a) -> np.ndarray:
    """[K, B, S, n] (reference / emulator layout) → [B, T, K, n] (trace layout)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    return np.ascontiguousarray(a.transpose(1, 2, 0, 3))


def _spike_key(name: str) -> str:
    return name[:-len(".lif2")] + ".out" if name.endswith(".ffn.lif2") else name + ".spikes"


def reference_trace(src, ids: np.ndarray, *, device: str, max_new_tokens: int) -> Trace:
    import torch

    from ns_compile.lower.nord import lower_nord
    from ns_compile.models.base import GenerationConfig

    h = src.handle
    cfg = h.config
    if h.version != "v3":
        from ns_compile.lower.nord_v4 import lower_nord_v4
        shape = lower_nord_v4(cfg, None, getattr(h, "_use_sdpa", None))
    else:
        shape = lower_nord(cfg, None)
    logits, tr = h.trace(torch.as_tensor(ids), device=device)
    K = cfg.T + cfg.T_slow
    meta = {"family": "nord", "config": dict(shape.config), "frames": K, "checkpoint": str(src.path),
            "checksum": src.checksum(), "dtype": "float32"}
    t = Trace(meta, logits=logits.float().cpu().numpy())
    for name in shape.populations:
        s = tr.get(_spike_key(name))
        if s is None:
            continue
        S = _frames(s).astype(np.uint8)
        v = tr.get(name + ".v")
        t.add(name, "lif_nord", spikes=S, out=S.astype(np.float64), v=None if v is None else _frames(v))
    for l in range(int(shape.config["n_layers"])):
        x = tr.get(_block_key(shape, l))
        if x is not None:
            t.add(_block_key(shape, l), "host", out=_frames(x))
    if max_new_tokens > 0:
        toks = h.generate(ids[0].tolist(), GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0),
                          device=device)
        t.meta["greedy"] = {"prompt_row": 0, "max_new_tokens": max_new_tokens, "tokens": [int(x) for x in toks]}
    return t


def _block_key(graph, l: int) -> str:
    """Trace key of block l's output: `blocks.{l}.out` (v3), `{zone}_blocks.{i}.out` (v4)."""
    blocks = graph.config.get("blocks")
    return f"{blocks[l]}.out" if blocks else f"blocks.{l}.out"


def _residual_frac(graph) -> int | None:
    for op in graph.host_ops.values():
        if op.kind == "nord_ffn_residual" and op.fmt:
            return int(op.fmt["f_X"])
    return None


def _fill(trace: Trace, graph, pops: dict, residual: dict, integer: bool):
    """pops: {name: {"V": [B, T, K, n], "S": [B, T, K, n]}}; residual: {block key: [B, T, K, D]}."""
    for name, f in pops.items():
        p = graph.populations[name]
        arrays, fr = {}, {}
        V = f.get("V")
        if V is not None:
            if integer:
                fv = int(p.fmt["V"])
                arrays.update(v_int=V.astype(np.int64), v=V.astype(np.float64) * 2.0 ** -fv)
                fr["v"] = fv
            else:
                arrays["v"] = V.astype(np.float64)
        S = (np.asarray(f["S"]) != 0).astype(np.uint8)
        arrays["spikes"] = S
        if integer:
            arrays["out_int"] = S.astype(np.int64)
            fr["out"] = 0
        arrays["out"] = S.astype(np.float64)
        trace.add(name, "lif_nord", fmt=fr, **arrays)
    fx = _residual_frac(graph)
    for key, X in residual.items():
        if integer and fx is not None:
            trace.add(key, "host", fmt={"out": fx}, out_int=X.astype(np.int64), out=X.astype(np.float64) * 2.0 ** -fx)
        else:
            trace.add(key, "host", out=X.astype(np.float64))


def emulator_trace(trace: Trace, graph, ids: np.ndarray, max_new_tokens: int) -> Trace:
    import torch

    from ns_compile.sim.nord import NordEmulator
    emu = NordEmulator(graph)
    tr: dict = {}
    logits = emu.forward(torch.as_tensor(ids, dtype=torch.long), trace=tr)
    trace.logits = logits.numpy().astype(np.float32)
    pops = {}
    for st in graph.stages:
        for name, f in tr[st.name].items():
            pops[name] = {"V": _frames(f["V"]), "S": _frames(f["P"])}
    res = {}
    for op in graph.host_ops.values():
        if op.kind in ("nord_ffn_residual", "nord4_moe_residual"):
            res[_block_key(graph, int(op.meta["layer"]))] = _frames(tr["host"][op.name]["X"])
    _fill(trace, graph, pops, res, graph.quantized)
    sat = {p: {k: v for k, v in c.items() if not k.endswith("_values")} for p, c in emu.counters.items()}
    for name, c in sat.items():
        if name in trace.entries:
            trace.entries[name].saturation.update({k: int(v) for k, v in c.items()})
    trace.meta["integer"] = bool(graph.quantized)
    if max_new_tokens > 0:
        trace.meta["greedy"] = {"prompt_row": 0, "max_new_tokens": max_new_tokens,
                                "tokens": emu.generate([int(x) for x in ids[0]], max_new_tokens)}
    trace.meta["activity"] = emu.activity()
    return trace


def lava_trace(trace: Trace, graph, ids: np.ndarray, mode: str, max_new_tokens: int, backend: str = "lava-sim",
               granularity: str = "fused", keep_generated: bool = False):
    """Lava run per row, teacher-forced over the ids (row 0 also generates); the trace is cut to the
    ids unless `keep_generated` (batch 1: every token the run processed, generated ones included)."""
    from ns_compile.backends.lava import run_artifact
    B, T = ids.shape
    per: dict = {}
    logits, greedy = [], []
    for r in range(B):
        n_new = max_new_tokens if r == 0 else 0
        res = run_artifact(graph, ids[r].tolist(), mode=mode, max_new_tokens=n_new, temperature=0.0, trace=True,
                           backend=backend, granularity=granularity)
        if r == 0 and n_new:
            greedy = list(res["ids"])
        keep = len(res["trace"]) if keep_generated and B == 1 else T
        logits.append(np.asarray(res["logits"])[:keep])
        for name in graph.populations:
            st = graph.populations[name].stage
            V = np.stack([tok[st][name]["V"] for tok in res["trace"][:keep]])          # [T, K, n]
            S = np.stack([tok[st][name]["P"] for tok in res["trace"][:keep]])
            slot = per.setdefault(name, {"V": [], "S": []})
            slot["V"].append(V)
            slot["S"].append(S)
    pops = {n: {"V": np.stack(f["V"]), "S": np.stack(f["S"])} for n, f in per.items()}
    trace.logits = np.stack(logits).astype(np.float32)
    _fill(trace, graph, pops, {}, mode == "fixed")
    trace.meta["integer"] = mode == "fixed"
    if max_new_tokens > 0:
        trace.meta["greedy"] = {"prompt_row": 0, "max_new_tokens": max_new_tokens, "tokens": greedy}
    return trace
