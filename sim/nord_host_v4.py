"""Nord v4.2 host ops (docs/fixed_point.md §7.5): integer for a quantized graph, real units for the
float IR. Shared by the Nord emulator and (through `NordEmulator.run_host`) the Lava host process.

Layout as nord_host: per-frame [K, N, ·], per-token [N, ·]; attention takes [K, B, S, D].
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ns_compile.sim.host import as_tensor, is_int
from ns_compile.sim.intops import exact_matmul, sat, shift
from ns_compile.sim.nord_host import NEG, _p, layernorm_float, layernorm_int

EXP_FRAC = 8                        # the exp table's index resolution: 2^-8 (docs §7.5)


def exp_lut(frac: int = EXP_FRAC) -> np.ndarray:
    """EXPL[i] = clamp(q(exp(−i·2^−frac), 16), 0, 65536), i = 0 .. while the entry is nonzero."""
    n = int(math.ceil(math.log(2.0 ** 17) * 2 ** frac)) + 1
    i = np.arange(n, dtype=np.float64)
    return np.clip(np.floor(np.exp(-i * 2.0 ** -frac) * 65536.0 + 0.5), 0, 65536).astype(np.int64)


def _exp_of_gap(gap: torch.Tensor, f_gap: int, EXPL: torch.Tensor) -> torch.Tensor:
    """EXPL[min(gap >> (f_gap − EXP_FRAC), len − 1)] for gap ≥ 0 at frac f_gap (the last entry is 0)."""
    idx = shift(gap, f_gap, EXP_FRAC).clamp(0, EXPL.numel() - 1)
    return EXPL[idx]


# ---- payload (residual stream as the input of host-fed groups) ----------------------------------------

def payload(op, X: torch.Tensor) -> torch.Tensor:
    if is_int(op):
        f = op.fmt
        return sat(shift(X, f["f_X"], f["f_Y"]), 16)
    return X


# ---- attention ------------------------------------------------------------------------------------------

def _rope(x, cos, sin, integer, f_t=None):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    if integer:
        return torch.cat([(x1 * cos - x2 * sin) >> f_t, (x1 * sin + x2 * cos) >> f_t], dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention(op, X, Y, SQ, SK, cache: dict | None, cfg, want: bool = False) -> dict:
    """v4 resonance: VB = (W_v/K)·ΣY; q̃/k̃ = RoPE(Σ_t w_t s_t) per head; scores = τ·q̃·k̃, causal;
    top-k (lowest index on ties) unless SDPA; softmax; O = diag(γ)W_o·ctx; X += O on every frame.
    The cache holds the rotated keys ("K", [B, H, P, Dh]) and VB ([B, P, D])."""
    K, B, S, D = X.shape
    H = int(op.meta["heads"])
    Dh = D // H
    dev = X.device
    integer = is_int(op)
    sdpa = bool(op.meta.get("sdpa"))
    top_k = int(op.meta["top_k"])
    if integer:
        f = op.fmt
        SY = Y.sum(0)
        VB = sat(shift(exact_matmul(SY, _p(op, "WV", dev, torch.float64), None, K * ((1 << 15) - 1)),
                       f["f_WV"] + f["f_Y"], f["f_VB"]), 24)
        WQ, WK = _p(op, "WQ", dev, torch.int64), _p(op, "WK", dev, torch.int64)
        qm = (SQ.to(torch.int64) * WQ.view(K, 1, 1, 1)).sum(0)                    # frac f_TM
        km = (SK.to(torch.int64) * WK.view(K, 1, 1, 1)).sum(0)
    else:
        dt = X.dtype
        VB = torch.matmul(Y.sum(0), _p(op, "WV", dev, dt).t())
        qm = (SQ.to(dt) * _p(op, "WQ", dev, dt).view(K, 1, 1, 1)).sum(0)
        km = (SK.to(dt) * _p(op, "WK", dev, dt).view(K, 1, 1, 1)).sum(0)
    qm = qm.reshape(B, S, H, Dh).transpose(1, 2)
    km = km.reshape(B, S, H, Dh).transpose(1, 2)
    offset = 0
    if cache is not None and cache.get("K") is not None:
        offset = cache["K"].shape[2]
    if integer:
        cs, sn = _p(op, "COS", dev, torch.int64)[offset:offset + S], _p(op, "SIN", dev, torch.int64)[offset:offset + S]
        qr = _rope(qm, cs, sn, True, f["f_T"])
        kr = _rope(km, cs, sn, True, f["f_T"])
    else:
        cs, sn = _p(op, "COS", dev, dt)[offset:offset + S], _p(op, "SIN", dev, dt)[offset:offset + S]
        qr = _rope(qm, cs, sn, False)
        kr = _rope(km, cs, sn, False)
    if cache is not None:
        if cache.get("K") is None:
            cache["K"], cache["VB"] = kr, VB
        else:
            cache["K"] = torch.cat([cache["K"], kr], dim=2)
            cache["VB"] = torch.cat([cache["VB"], VB], dim=1)
        k_all, v_all = cache["K"], cache["VB"]
    else:
        k_all, v_all = kr, VB
    Sk = k_all.shape[2]
    vis = (torch.arange(Sk, device=dev)[None, :] <= (torch.arange(S, device=dev)[:, None] + offset))
    kstar = min(top_k, Sk)
    drop = (not sdpa) and kstar < Sk
    vh = v_all.reshape(B, Sk, H, Dh).transpose(1, 2)
    out = {}
    if integer:
        # DOT at frac 2·f_TM (exact in float64: |q̃|,|k̃| < 2^(f_TM+1), Dh terms)
        DOT = torch.matmul(qr.to(torch.float64), k_all.to(torch.float64).transpose(-1, -2)).to(torch.int64)
        SC = torch.div(DOT * int(op.params["TEMP"][0]), 1 << (2 * f["f_TM"] + f["f_TEMP"] - f["f_SC"]),
                       rounding_mode="floor")                                     # frac f_SC
        key = torch.where(vis, SC, torch.full_like(SC, NEG))
        if drop:
            order = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :kstar]
            kept = torch.zeros_like(vis.expand_as(key)).scatter(-1, order, True) & vis
        else:
            kept = vis.expand_as(key)
        m = torch.where(kept, key, torch.full_like(key, NEG)).amax(-1, keepdim=True)
        E = torch.where(kept, _exp_of_gap((m - key).clamp(min=0), f["f_SC"], _p(op, "EXPL", dev, torch.int64)),
                        torch.zeros_like(key))
        DEN = E.sum(-1, keepdim=True)
        NUM = torch.matmul(E.to(torch.float64), vh.to(torch.float64))
        if 65536 * (1 << 23) * Sk >= (1 << 53):
            NUM = torch.matmul(E.cpu(), vh.cpu().to(torch.int64)).to(dev).to(torch.float64)
        CTX = torch.div(NUM.to(torch.int64), DEN.clamp(min=1), rounding_mode="floor")
        ctx = CTX.transpose(1, 2).reshape(B, S, D)
        O = exact_matmul(ctx, _p(op, "WO", dev, torch.float64), None, 1 << 23)
        Xn = sat(X + shift(O, f["f_WO"] + f["f_VB"], f["f_X"]).unsqueeze(0), 24)
        if want:
            out["scores"] = torch.where(kept, key, torch.full_like(key, NEG))
            out["attn"] = torch.div(E << 16, DEN.clamp(min=1), rounding_mode="floor")
    else:
        sc = torch.matmul(qr, k_all.transpose(-1, -2)) * float(op.params["TEMP"][0])
        sc = sc.masked_fill(~vis, float("-inf"))
        if want:
            out["scores_pre"] = sc
        if drop:
            order = torch.sort(sc, dim=-1, descending=True, stable=True).indices[..., :kstar]
            sc = torch.full_like(sc, float("-inf")).scatter(-1, order, sc.gather(-1, order))
        A = torch.softmax(sc, dim=-1)
        ctx = torch.matmul(A, vh.to(dt)).transpose(1, 2).reshape(B, S, D)
        O = torch.matmul(ctx, _p(op, "WO", dev, dt).t())
        Xn = X + O.unsqueeze(0)
        if want:
            out["scores"] = sc
            out["attn"] = A
        out["_sc"] = sc
    out["X"] = Xn
    if want:
        out["O"] = O
        out["VB"] = VB
    return out


# ---- MoE ----------------------------------------------------------------------------------------------

def moe_gate(op, S: torch.Tensor, Y: torch.Tensor) -> dict:
    """S: route_lif spikes [K, N, D]; Y: norm2 output [K, N, D]. Returns the expert payload
    [K, N, E·D] (Y in the selected experts' slices, 0 elsewhere), idx [N, k], W [N, k], scores [N, E]."""
    K, N, D = Y.shape
    Ex, kx = int(op.meta["experts"]), int(op.meta["top_k"])
    dev = Y.device
    ex = _p(op, "EXPERT", dev, torch.int64)
    CNT = torch.zeros(N, Ex, dtype=torch.int64, device=dev).index_add_(1, ex, S.to(torch.int64).sum(0))
    integer = is_int(op)
    if integer:
        sc = CNT * int(op.params["A"][0]) + _p(op, "BIAS", dev, torch.int64)       # frac f_SC
    else:
        sc = CNT.to(Y.dtype) * float(op.params["A"][0]) + _p(op, "BIAS", dev, Y.dtype)
    idx = torch.sort(sc, dim=-1, descending=True, stable=True).indices[..., :kx]
    top = sc.gather(-1, idx)
    if integer:
        gap = top[..., :1] - top                                                   # ≥ 0, frac f_SC
        Ek = _exp_of_gap(gap, op.fmt["f_SC"], _p(op, "EXPL", dev, torch.int64))   # 65536 for the best
        w = torch.div(Ek << 16, Ek.sum(-1, keepdim=True), rounding_mode="floor")  # frac 16
    else:
        w = torch.softmax(top, dim=-1)
    mask = torch.zeros(N, Ex, dtype=torch.bool, device=dev).scatter(-1, idx, True)
    drv = (Y.unsqueeze(2) * mask.view(1, N, Ex, 1).to(Y.dtype)).reshape(K, N, Ex * D)
    return {"drive": drv, "idx": idx, "W": w, "scores": sc}


def moe_residual(op, X: torch.Tensor, S2: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """X += γ·Σ_i w_i · s2[expert idx_i]; LeakyClamp."""
    K, N, D = X.shape
    Ex = int(op.meta["experts"])
    dev = X.device
    s2 = S2.reshape(K, N, Ex, D)
    sel = s2.gather(2, idx.view(1, N, -1, 1).expand(K, N, idx.shape[-1], D))     # [K, N, k, D]
    if is_int(op):
        mix = (sel.to(torch.int64) * w.view(1, N, -1, 1)).sum(2)                   # frac 16
        X = sat(X + shift(mix * _p(op, "GF", dev, torch.int64), 16 + op.fmt["f_GF"], op.fmt["f_X"]), 24)
        leaked = torch.maximum((X * _p(op, "LEAK", dev, torch.int64)) >> 16, _p(op, "FL", dev, torch.int64))
        return torch.where(X >= 0, X, leaked)
    dt = X.dtype
    mix = (sel.to(dt) * w.to(dt).view(1, N, -1, 1)).sum(2)
    X = X + mix * _p(op, "GF", dev, dt)
    return torch.where(X >= 0, X, torch.maximum(_p(op, "LEAK", dev, dt) * X, _p(op, "FLOOR", dev, dt)))


# ---- memory cortex -----------------------------------------------------------------------------------

def memory_read(op, X: torch.Tensor, SG: torch.Tensor, VM: torch.Tensor, cfg, want: bool = False) -> dict:
    """X [K, N, D]; SG gate_lif spikes, VM memory_lif membrane [K, N, M]. Read attention over the K
    frames per head, the gate from gate_lif's spike count, from_memory, mem_norm (·σ(mix) folded)."""
    K, N, M = VM.shape
    Hr = int(op.meta["heads"])
    hd = M // Hr
    dev = X.device
    eps = cfg.get("eps", 1e-5)
    cnt = SG.to(torch.int64).sum(0)                                                # [N, M] in 0..K
    if is_int(op):
        f = op.fmt
        a = exact_matmul(VM, _p(op, "WA", dev, torch.float64), None, 1 << 23)       # frac f_WA + f_V
        a = shift(a, f["f_WA"] + f["f_V"], f["f_SC"])
        m = a.amax(0, keepdim=True)
        Et = _exp_of_gap(m - a, f["f_SC"], _p(op, "EXPL", dev, torch.int64))       # [K, N, Hr]
        DEN = Et.sum(0)                                                            # ≥ 65536
        v = VM.reshape(K, N, Hr, hd)
        read = torch.div((Et.unsqueeze(-1) * v).sum(0), DEN.unsqueeze(-1), rounding_mode="floor").reshape(N, M)
        gate = _p(op, "GATE", dev, torch.int64)[cnt]                               # frac 16
        rg = (read * gate) >> 16                                                   # frac f_V
        u = shift(exact_matmul(rg, _p(op, "WF", dev, torch.float64), None, 1 << 23), f["f_WF"] + f["f_V"], f["f_U"])
        u = sat(u, 24)
        from ns_compile.lower.nord import ln_frac_r, ln_shift
        out = layernorm_int(u, f["f_U"], _p(op, "G", dev, torch.int64), f["f_G"], _p(op, "BY", dev, torch.int64),
                            f["f_X"], eps, ln_shift(u.shape[-1]), ln_frac_r(u.shape[-1], f["f_U"]), out_bits=24)
        Xn = sat(X + out.unsqueeze(0), 24)
        alpha = torch.div(Et << 16, DEN.unsqueeze(0), rounding_mode="floor")
    else:
        dt = X.dtype
        a = torch.matmul(VM.to(dt), _p(op, "WA", dev, dt).t())                     # [K, N, Hr]
        alpha = torch.softmax(a, dim=0)
        read = (alpha.unsqueeze(-1) * VM.to(dt).reshape(K, N, Hr, hd)).sum(0).reshape(N, M)
        gate = torch.sigmoid(10.0 * (cnt.to(dt) / K - float(op.params["GTH"][0])))
        u = torch.matmul(read * gate, _p(op, "WF", dev, dt).t())
        out = layernorm_float(u, _p(op, "G", dev, dt), _p(op, "BY", dev, dt), eps)
        Xn = X + out.unsqueeze(0)
    r = {"X": Xn, "U": u, "A": a}
    if want:
        r["attn"] = alpha
    return r
