"""Metrics between two traces of the same input (docs/compare.md defines every number).

`compare_traces(a, b)` returns one JSON-ready dict per pair: output metrics (KL, top-1, greedy,
perplexity), `bit_exact`, `first_divergence` and one row per population ("layers") with the
membrane error in float units, the first divergent frame, spike agreement / Hamming distance and
the saturation counters of both stages.
"""
from __future__ import annotations

import math

import numpy as np

from ns_compile.errors import UserError
from ns_compile.verify.keys import execution_rank, parse_key
from ns_compile.verify.trace import Entry, Trace

DEFAULT_RTOL = 1e-3      # float divergence: |Δ| > atol + rtol · max|a| of the population
DEFAULT_ATOL = 0.0


# ---- outputs --------------------------------------------------------------------------------------

def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def logits_metrics(la: np.ndarray, lb: np.ndarray) -> dict:
    """KL(softmax(a) ‖ softmax(b)) per position (nats), top-1 agreement, max |Δ|, min cosine."""
    if la.shape != lb.shape:
        raise UserError(f"logits shapes differ: {list(la.shape)} vs {list(lb.shape)}")
    pa, pb = _log_softmax(la), _log_softmax(lb)
    kl = (np.exp(pa) * (pa - pb)).sum(-1)                         # [B, T]
    top_a, top_b = la.argmax(-1), lb.argmax(-1)
    a64, b64 = la.astype(np.float64), lb.astype(np.float64)
    cos = (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1), 1e-300)
    return {
        "kl": float(kl.mean()),
        "kl_max": float(kl.max()),
        "kl_per_token": [float(x) for x in kl.mean(0)],
        "top1_agreement": float((top_a == top_b).mean()),
        "top1_per_token": [float(x) for x in (top_a == top_b).mean(0)],
        "max_abs_logit_diff": float(np.abs(a64 - b64).max()),
        "min_cosine": float(cos.min()),
    }


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float | None:
    """exp(mean next-token NLL) of `ids` [B, T] under `logits` [B, T, V]; None when T < 2."""
    if logits is None or ids is None or ids.shape[1] < 2:
        return None
    lp = _log_softmax(logits[:, :-1])
    nll = -np.take_along_axis(lp, ids[:, 1:, None].astype(np.int64), axis=-1)[..., 0]
    return float(math.exp(nll.mean()))


def greedy_metrics(ga: dict | None, gb: dict | None) -> dict | None:
    """Agreement of two independent greedy generations from the same prompt."""
    if not ga or not gb:
        return None
    ta, tb = list(ga.get("tokens", [])), list(gb.get("tokens", []))
    n = max(len(ta), len(tb))
    if n == 0:
        return None
    prefix = 0
    for x, y in zip(ta, tb):
        if x != y:
            break
        prefix += 1
    same = sum(x == y for x, y in zip(ta, tb))
    return {"tokens_a": ta, "tokens_b": tb, "common_prefix": prefix, "agreement": prefix / n,
            "positionwise_agreement": same / n}


# ---- populations -----------------------------------------------------------------------------------

def _first_true(mask_btk: np.ndarray):
    """mask [B, T, K] -> (row, token, frame) of the earliest True in (token, frame) order, or None."""
    if not mask_btk.any():
        return None
    B, T, K = mask_btk.shape
    any_b = mask_btk.any(axis=0).reshape(T * K)
    g = int(np.argmax(any_b))
    t, k = divmod(g, K)
    row = int(np.argmax(mask_btk[:, t, k]))
    return row, t, k


def _div(row, t, k, K, token_level=False):
    return {"row": row, "token": t, "frame": (None if token_level else k),
            "global_frame": (t * K + (K - 1 if token_level else k))}


def compare_entry(ea: Entry, eb: Entry, K: int, *, both_integer: bool, rtol=DEFAULT_RTOL,
                  atol=DEFAULT_ATOL) -> dict:
    info = parse_key(ea.key)
    fld = ea.state_field
    token_level = fld == "token"
    xa, xb = ea.get(fld), eb.get(fld)
    row = {"population": ea.key, "layer": info.layer, "sublayer": info.sublayer, "name": info.name,
           "kind": ea.kind if ea.kind != "?" else eb.kind, "field": fld, "size": ea.size,
           "saturation_a": dict(ea.saturation), "saturation_b": dict(eb.saturation)}
    if xb is None:
        row["missing_in_b"] = True
        return row
    if xa.shape != xb.shape:
        raise UserError(f"{ea.key}/{fld}: shapes differ between the traces: {list(xa.shape)} vs {list(xb.shape)}")
    if token_level:                                      # [B, T, n] -> [B, T, 1, n]
        xa4, xb4 = xa[:, :, None], xb[:, :, None]
    else:
        xa4, xb4 = xa, xb
    d = np.abs(xa4.astype(np.float64) - xb4.astype(np.float64))          # [B, T, K', n]
    scale = float(np.sqrt(np.mean(xa4.astype(np.float64) ** 2))) if xa4.size else 0.0
    amax = float(np.abs(xa4).max()) if xa4.size else 0.0
    row["max_err"] = float(d.max()) if d.size else 0.0
    row["rms_err"] = float(np.sqrt(np.mean(d ** 2))) if d.size else 0.0
    row["rms_a"] = scale
    row["rel_rms_err"] = row["rms_err"] / scale if scale > 0 else (0.0 if row["rms_err"] == 0 else math.inf)
    # first divergent frame: integer states when both stages are integer with the same frac
    ifld = fld + "_int"
    ia, ib = ea.get(ifld), eb.get(ifld)
    int_cmp = (both_integer and ia is not None and ib is not None and ia.shape == ib.shape
               and ea.fmt.get(fld) == eb.fmt.get(fld))
    row["integer_compared"] = bool(int_cmp)
    if int_cmp:
        ne = (ia != ib) if not token_level else (ia != ib)[:, :, None]
        row["int_mismatches"] = int(ne.sum())
        mask = ne.any(axis=-1)
        row["divergence_rule"] = "integer state differs"
    else:
        tol = atol + rtol * amax
        mask = (d > tol).any(axis=-1)
        row["divergence_rule"] = f"|Δ| > {atol:g} + {rtol:g}·max|a| = {tol:.3g}"
    first = _first_true(mask)
    row["first_divergent_frame"] = None if first is None else _div(*first, K, token_level)
    # spikes
    sa, sb = ea.get("spikes"), eb.get("spikes")
    if sa is not None and sb is not None and sa.shape == sb.shape:
        ne = sa != sb
        row["spike_agreement"] = float(1.0 - ne.mean()) if ne.size else 1.0
        row["hamming"] = int(ne.sum())
        row["spike_rate_a"] = float(sa.mean()) if sa.size else 0.0
        row["spike_rate_b"] = float(sb.mean()) if sb.size else 0.0
        ham_t = ne.sum(axis=(0, 2, 3))
    else:
        ham_t = None
    # per token
    T = d.shape[1]
    per = []
    for t in range(T):
        dt = d[:, t]
        e = {"token": t, "max_err": float(dt.max()) if dt.size else 0.0,
             "rms_err": float(np.sqrt(np.mean(dt ** 2))) if dt.size else 0.0}
        if ham_t is not None:
            e["hamming"] = int(ham_t[t])
        per.append(e)
    row["per_token"] = per
    return row


def _exec_order(row: dict, div: dict) -> tuple:
    r = execution_rank(row["population"])
    k = div["frame"] if div["frame"] is not None else 10 ** 9
    return (div["token"], r[:3], k, r[3])


def compare_traces(a: Trace, b: Trace, *, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL) -> dict:
    """All metrics of the pair (a, b); `a` is the baseline (KL(a‖b), relative errors to a)."""
    if a.input_ids is not None and b.input_ids is not None and not np.array_equal(a.input_ids, b.input_ids):
        raise UserError(f"the traces of {a.stage} and {b.stage} are for different input ids")
    K = a.frames
    both_int = a.integer and b.integer
    out: dict = {"a": a.stage, "b": b.stage, "integer": both_int, "frames": K}
    if a.input_ids is not None:
        out["rows"], out["tokens"] = int(a.input_ids.shape[0]), int(a.input_ids.shape[1])
    if a.logits is not None and b.logits is not None:
        out.update(logits_metrics(a.logits, b.logits))
    else:
        out.update({"kl": None, "top1_agreement": None})
    pa, pb = perplexity(a.logits, a.input_ids), perplexity(b.logits, b.input_ids)
    out["perplexity"] = None if pa is None or pb is None else {
        "a": pa, "b": pb, "rel_diff": (pb - pa) / pa, "source": a.meta.get("input_source", "input ids")}
    out["greedy"] = greedy_metrics(a.meta.get("greedy"), b.meta.get("greedy"))
    rows = []
    for key in a.keys():
        if key in b.entries:
            rows.append(compare_entry(a.entries[key], b.entries[key], K, both_integer=both_int, rtol=rtol, atol=atol))
    out["layers"] = rows
    out["only_in_a"] = [k for k in a.keys() if k not in b.entries]
    out["only_in_b"] = [k for k in b.keys() if k not in a.entries]
    divs = [(_exec_order(r, r["first_divergent_frame"]), r) for r in rows if r.get("first_divergent_frame")]
    if divs:
        _, r = min(divs, key=lambda x: x[0])
        out["first_divergence"] = {"layer": r["population"], "population": r["population"],
                                   "layer_index": r["layer"], "sublayer": r["sublayer"], **r["first_divergent_frame"]}
    else:
        out["first_divergence"] = None
    compared_int = [r for r in rows if r.get("integer_compared")]
    logits_equal = a.logits is None or b.logits is None or np.array_equal(a.logits, b.logits)
    # every on-chip population must be present in both (per-token host values may be missing in one)
    missing = [k for k in out["only_in_a"] if a.entries[k].kind != "host"] + \
              [k for k in out["only_in_b"] if b.entries[k].kind != "host"]
    out["bit_exact"] = bool(both_int and compared_int and all(r["int_mismatches"] == 0 for r in compared_int)
                            and logits_equal and not missing)
    out["saturation"] = {"a": _sat_total(a), "b": _sat_total(b)}
    return out


def _sat_total(t: Trace) -> int:
    return int(sum(sum(e.saturation.values()) for e in t.entries.values()))


def worst_first(rows: list[dict]) -> list[dict]:
    """Population rows ordered worst first: relative RMS error, then spike flips, then earliest divergence."""
    def key(r):
        rel = r.get("rel_rms_err", 0.0)
        rel = 1e300 if rel == math.inf else rel
        div = r.get("first_divergent_frame")
        return (-rel, -r.get("hamming", 0), div["global_frame"] if div else 10 ** 12)
    return sorted(rows, key=key)


def pairs_for(stages: list[str]) -> list[tuple[str, str]]:
    """The baseline (first stage) against every other stage, then each adjacent pair of the others."""
    if len(stages) < 2:
        return []
    base, rest = stages[0], stages[1:]
    pairs = [(base, s) for s in rest]
    pairs += [(rest[i], rest[i + 1]) for i in range(len(rest) - 1)]
    return pairs
