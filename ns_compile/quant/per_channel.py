"""Per-row (per-output-channel) power-of-two weight scales, folded into the receiving neuron
(docs/fixed_point.md §2.1).

A synapse-fed port X of a NeuronSpark population may carry a shift vector RS_X (one r_i ∈ [0, 7]
per neuron, shared by every group into the port). Every group into the port stores row i at frac
f_W + r_i (so a row with small weights uses the whole b-bit range) while keeping ONE f_W (Lava's
Dense keeps one weight_exp); the neuron floor-shifts the port sum by r_i before its sat_24.

`port_row_shifts` is the compiler's choice of r for one port (the rule written in §2.1): per row
the shift t ∈ 0..7 (within the group's MSE search window) with the least squared weight error
over the port's groups, among t = 0 and the t for which every group's worst-case accumulator of
row i fits int32 (also after a positive weight_exp) and the worst-case port sum Σ_groups |A'_i|
fits int32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RS_MAX = 7
INT32 = (1 << 31) - 1
# neuron types whose synapse-fed ports may carry RS (§2.1; product ports are direct, Nord has none)
PER_CHANNEL_KINDS = ("plif_static", "plif_selective", "gated_readout", "accumulate")


def rs_key(port: str) -> str:
    """Population parameter holding the port's shift vector."""
    return f"RS_{port}"


def row_shifts_of(pop) -> dict[str, np.ndarray]:
    """{port: r (int64 [size])} of a quantized population (ports without RS omitted)."""
    return {k[3:]: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in pop.params.items() if k.startswith("RS_")}


@dataclass
class GroupInfo:
    w: np.ndarray          # float weights [fan_out, fan_in]
    f_W: int               # the group's frac (whole group, chosen as without per-channel)
    bits: int
    smax: int              # largest |payload| of the source (2^(p−1) − 1)
    weight_exp: int        # Lava Dense weight_exp = f_A − (f_W + f_S + 9 − b)


def _qm(x, f, n):
    q = np.floor(np.asarray(x, dtype=np.float64) * np.exp2(np.asarray(f, dtype=np.float64)) + 0.5)
    return np.clip(q, -(1 << (n - 1)), (1 << (n - 1)) - 1).astype(np.int64)


def _fit_frac(m: np.ndarray, bits: int, lo: int = -16, hi: int = 40) -> np.ndarray:
    """Vectorised frac_for: the largest f with m·2^f ≤ 2^(bits−1) − 1 (hi where m = 0)."""
    lim = float((1 << (bits - 1)) - 1)
    m = np.asarray(m, dtype=np.float64)
    with np.errstate(divide="ignore"):
        f = np.floor(np.log2(lim / np.where(m > 0, m, 1.0)))
    f = np.where(m > 0, f, hi)
    # guard against log2 rounding at exact powers of two: make m·2^f ≤ lim hold exactly
    f = np.where((m > 0) & (m * np.exp2(f) > lim), f - 1, f)
    return np.clip(f, lo, hi).astype(np.int64)


def _worst(g: GroupInfo, rows: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """For the given rows stored at f_W + t: (fits: accumulator (and a left weight_exp) fit int32,
    bound on |A'_i| (int64, capped))."""
    M = _qm(g.w[rows], g.f_W + t, g.bits)
    l1 = np.abs(M).sum(axis=1).astype(np.int64)
    acc = l1 * np.int64(g.smax) * np.int64(1 << (9 - g.bits))        # ≤ 2^8·fan_in·2^23·2^7: fits int64
    fits = acc <= INT32
    if g.weight_exp > 0:
        fits &= acc <= (INT32 >> g.weight_exp)
        a = np.where(fits, acc << g.weight_exp, INT32 + 1)
    else:
        a = (acc >> (-g.weight_exp)) + (1 if g.weight_exp < 0 else 0)   # |floor(x / 2^k)| ≤ |x| / 2^k + 1
    return fits, np.minimum(a, np.int64(1) << 40)


def port_row_shifts(groups: list[GroupInfo], rmax: int = RS_MAX) -> np.ndarray:
    """r (int64 [fan_out]) for one port fed by `groups` (docs/fixed_point.md §2.1): per row, the
    t ∈ [0, min(7, F(max_j |w_ij|) + 3 − f_W)] (every group) that minimises the row's squared
    quantization error summed over the groups (smallest t on ties), among t = 0 and the t whose
    int32 bounds hold. t = 0 is always a candidate, so no row's error exceeds its per-tensor error."""
    n = groups[0].w.shape[0]
    cap = np.full(n, rmax, dtype=np.int64)
    for g in groups:
        rowmax = np.abs(g.w).max(axis=1) if g.w.shape[1] else np.zeros(n)
        cap = np.minimum(cap, np.clip(_fit_frac(rowmax, g.bits) + 3 - g.f_W, 0, rmax))
    r = np.zeros(n, dtype=np.int64)
    best = np.zeros(n, dtype=np.float64)
    for t in range(0, int(cap.max(initial=0)) + 1):
        rows = np.arange(n) if t == 0 else np.nonzero(cap >= t)[0]
        if rows.size == 0:
            continue
        err = np.zeros(rows.size, dtype=np.float64)
        ok = np.ones(rows.size, dtype=bool)
        psum = np.zeros(rows.size, dtype=np.int64)
        for g in groups:
            w = np.asarray(g.w[rows], dtype=np.float64)
            e = _qm(w, g.f_W + t, g.bits) * 2.0 ** -(g.f_W + t) - w
            err += (e * e).sum(axis=1)
            fits, a = _worst(g, rows, t)
            ok &= fits
            psum += a
        if t == 0:
            best[:] = err
            continue
        better = ok & (psum <= INT32) & (err < best[rows])
        best[rows[better]] = err[better]
        r[rows[better]] = t
    return r


def quantize_rows(w: np.ndarray, f_W: int, r: np.ndarray | None, bits: int) -> np.ndarray:
    """M_ij = qm(w_ij, f_W + r_i, b) (int64)."""
    if r is None:
        return _qm(w, f_W, bits)
    return _qm(w, f_W + np.asarray(r, dtype=np.int64)[:, None], bits)
