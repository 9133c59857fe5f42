"""Nord host ops (docs/fixed_point.md §7.3): integer for a quantized graph, real units for the float IR.

Shared by the Nord emulator (`ns_compile.sim.nord`) and the Lava backend's Nord host process, so
both compute identical host results. Layout: per-frame tensors [K, N, D] (N rows), per-token
[N, D]; the attention takes [K, B, S, D] (rows = positions of B sequences).
"""
from __future__ import annotations

import math

import torch

from ns_compile.sim.host import as_tensor, is_int
from ns_compile.sim.intops import exact_matmul, sat, shift

NEG = -(1 << 40)                     # key of an invisible (masked) position in the integer top-k


def _p(op, key, device, dtype):
    return as_tensor(op.params[key], device, dtype)


# ---- LayerNorm --------------------------------------------------------------------------------------

def layernorm_int(X: torch.Tensor, f_x: int, G: torch.Tensor, f_g: int, BY: torch.Tensor, f_y: int, eps: float,
                  s: int, f_r: int, out_bits: int = 16) -> torch.Tensor:
    """§7.3 LayerNorm on integers over the last dim."""
    D = X.shape[-1]
    assert f_r + f_x - s >= 16, "LayerNorm fracs: f_R + f_X - s must be >= 16"
    S = X.sum(-1, keepdim=True)
    U = (D * X - S) >> s
    QS = (U * U).sum(-1)
    num = (D ** 3) << (2 * f_r + 2 * (f_x - s))
    epsi = math.floor(eps * D ** 3 * 2.0 ** (2 * (f_x - s)) + 0.5)
    r = [math.isqrt(num // (qs + epsi)) if qs + epsi > 0 else 0 for qs in QS.reshape(-1).tolist()]
    R = torch.tensor(r, dtype=torch.int64, device=X.device).reshape(QS.shape).unsqueeze(-1)
    N = torch.div(U * R, D << (f_r + f_x - s - 16), rounding_mode="floor")
    return sat(shift(N * G, 16 + f_g, f_y) + BY, out_bits)


def layernorm_float(X, G, BY, eps):
    mu = X.mean(-1, keepdim=True)
    var = (X - mu).pow(2).mean(-1, keepdim=True)
    return (X - mu) * torch.rsqrt(var + eps) * G + BY


def _layernorm(op, X, cfg):
    eps = cfg.get("eps", 1e-5)
    if is_int(op):
        f = op.fmt
        dev = X.device
        return layernorm_int(X, f["f_X"], _p(op, "G", dev, torch.int64), f["f_G"], _p(op, "BY", dev, torch.int64),
                             f["f_Y"], eps, f["s"], f["f_R"])
    return layernorm_float(X, _p(op, "G", X.device, X.dtype), _p(op, "BY", X.device, X.dtype), eps)


# ---- the ops ------------------------------------------------------------------------------------------

def encoder(op, ids: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """ids [N] → per-frame drive [K, N, D]."""
    dev = ids.device
    if is_int(op):
        f = op.fmt
        E = _p(op, "E", dev, torch.int64)[ids]
        G = _p(op, "G", dev, torch.int64)
        return sat(shift(E.unsqueeze(0) * G.unsqueeze(1), f["f_E"] + f["f_G"], f["f_V"]), 24)
    E = _p(op, "E", dev, dtype)[ids]
    return _p(op, "G", dev, dtype).unsqueeze(1) * E.unsqueeze(0)


def spike_residual(op, S: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    if is_int(op):
        return S.to(torch.int64) << int(op.fmt["f_X"])
    return S.to(dtype)


def ffn_residual(op, X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    dev = X.device
    relu = bool(op.meta.get("relu"))                   # Nord v4 executive blocks: ReLU instead of LeakyClamp
    if is_int(op):
        X = sat(X + S.to(torch.int64) * _p(op, "GF", dev, torch.int64), 24)
        if relu:
            return X.clamp(min=0)
        leaked = torch.maximum((X * _p(op, "LEAK", dev, torch.int64)) >> 16, _p(op, "FL", dev, torch.int64))
        return torch.where(X >= 0, X, leaked)
    dt = X.dtype
    X = X + S.to(dt) * _p(op, "GF", dev, dt)
    if relu:
        return torch.relu(X)
    return torch.where(X >= 0, X, torch.maximum(_p(op, "LEAK", dev, dt) * X, _p(op, "FLOOR", dev, dt)))


def gain_drive(op, X: torch.Tensor) -> torch.Tensor:
    dev = X.device
    if is_int(op):
        f = op.fmt
        return sat(shift(X * _p(op, "G", dev, torch.int64), f["f_X"] + f["f_G"], f["f_V"]), 24)
    return X * _p(op, "G", dev, X.dtype)


def readout(op, S: torch.Tensor, V: torch.Tensor, cfg) -> dict:
    """S, V [K, N, D] of readout_lif → Y [N, D] (EMA + spike mean + readout LayerNorm)."""
    K = S.shape[0]
    dev = V.device
    if is_int(op):
        f = op.fmt
        AE, AC = int(op.params["AE"][0]), int(op.params["AC"][0])
        M = torch.zeros_like(V[0])
        for k in range(K):
            M = (AE * M + AC * V[k]) >> 16
        CNT = S.to(torch.int64).sum(0)
        Rr = sat(M + torch.div(CNT << f["f_V"], K, rounding_mode="floor"), 24)
        Y = layernorm_int(Rr, f["f_V"], _p(op, "G", dev, torch.int64), f["f_G"], _p(op, "BY", dev, torch.int64),
                          f["f_Y"], cfg.get("eps", 1e-5), f["s"], f["f_R"])
        return {"Y": Y, "R": Rr, "M": M}
    dt = V.dtype
    a = float(op.params["A"][0])
    M = torch.zeros_like(V[0])
    for k in range(K):
        M = a * M + (1.0 - a) * V[k]
    Rr = M + S.to(dt).mean(0)
    Y = layernorm_float(Rr, _p(op, "G", dev, dt), _p(op, "BY", dev, dt), cfg.get("eps", 1e-5))
    return {"Y": Y, "R": Rr, "M": M}


def lm_head(op, Y: torch.Tensor) -> dict:
    if is_int(op):
        f = op.fmt
        W = _p(op, "W", Y.device, torch.float64)
        LOG = exact_matmul(Y, W, op.meta.get("W_max"), (1 << 15) - 1)
        return {"logits": (LOG.to(torch.float64) * 2.0 ** -(f["f_W"] + f["f_Y"])).float(), "LOG": LOG}
    return {"logits": torch.matmul(Y, _p(op, "W", Y.device, Y.dtype).t()).float()}


# ---- attention -----------------------------------------------------------------------------------------

def exp_table(tau: float, n_max: int):
    """EXP[n] = clamp(q(exp(−|τ|·n), 16), 0, 65536), n = 0..n_max (float64; §7.3)."""
    import numpy as np
    n = np.arange(n_max + 1, dtype=np.float64)
    return np.clip(np.floor(np.exp(-abs(float(tau)) * n) * 65536.0 + 0.5), 0, 65536).astype(np.int64)


def _heads(x: torch.Tensor, H: int) -> torch.Tensor:
    """[K, B, S, D] → [B, H, S, K·Dh] (the time-channel bits of each position per head)."""
    K, B, S, D = x.shape
    return x.reshape(K, B, S, H, D // H).permute(1, 3, 2, 0, 4).reshape(B, H, S, K * (D // H))


def attention(op, X, Y, SQ, SK, cache: dict | None, cfg, want: bool = False) -> dict:
    """One block's resonance attention. X, Y, SQ, SK: [K, B, S, D] for the S new positions; `cache`
    ({"K": [K, B, P, D] spikes, "VB": [B, P, D]} or empty) is extended in place.
    Returns {"X": X + O (every frame), ...} (+ "scores", "attn", "O", "VB" with want=True)."""
    K, B, S, D = X.shape
    H = int(op.meta["heads"])
    Dh = D // H
    top_k = int(op.meta["top_k"])
    dev = X.device
    integer = is_int(op)
    if integer:
        f = op.fmt
        SY = Y.sum(0)                                                              # [B, S, D]
        VB = sat(shift(exact_matmul(SY, _p(op, "WV", dev, torch.float64), None, K * ((1 << 15) - 1)),
                       f["f_WV"] + f["f_Y"], f["f_VB"]), 24)
    else:
        VB = torch.matmul(Y.sum(0), _p(op, "WV", dev, X.dtype).t())
    sk = SK.to(torch.int8)
    if cache is not None:
        if cache.get("K") is None:
            cache["K"], cache["VB"] = sk, VB
        else:
            cache["K"] = torch.cat([cache["K"], sk], dim=2)
            cache["VB"] = torch.cat([cache["VB"], VB], dim=1)
        k_all, v_all = cache["K"], cache["VB"]
    else:
        k_all, v_all = sk, VB
    Sk = k_all.shape[2]
    offset = Sk - S
    qh = _heads(SQ.to(torch.float32), H)
    kh = _heads(k_all.to(torch.float32), H)
    CNT = torch.matmul(qh, kh.transpose(-1, -2))                                  # exact counts (≤ K·Dh < 2^24)
    vis = (torch.arange(Sk, device=dev)[None, :] <= (torch.arange(S, device=dev)[:, None] + offset))
    kstar = min(top_k, Sk)
    vh = v_all.reshape(B, Sk, H, Dh).transpose(1, 2)                              # [B, H, Sk, Dh]
    out = {}
    if integer:
        sgn = int(op.params["SGN"][0])
        key = torch.where(vis, CNT.to(torch.int64) * sgn, torch.full_like(CNT, NEG, dtype=torch.int64))
        if kstar < Sk:
            order = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :kstar]
            kept = torch.zeros_like(vis.expand_as(key)).scatter(-1, order, True) & vis
        else:
            kept = vis.expand_as(key)
        m = torch.where(kept, key, torch.full_like(key, NEG)).amax(-1, keepdim=True)
        n = (m - key).clamp(0, K * Dh)
        EXP = _p(op, "EXP", dev, torch.int64)
        E = torch.where(kept, EXP[n], torch.zeros_like(n))
        DEN = E.sum(-1, keepdim=True)
        if 65536 * (1 << 23) * Sk < (1 << 53):
            NUM = torch.matmul(E.to(torch.float64), vh.to(torch.float64)).to(torch.int64)
        else:
            NUM = torch.matmul(E.cpu(), vh.cpu()).to(dev)
        CTX = torch.div(NUM, DEN.clamp(min=1), rounding_mode="floor")              # [B, H, S, Dh]
        ctx = CTX.transpose(1, 2).reshape(B, S, D)
        O = exact_matmul(ctx, _p(op, "WO", dev, torch.float64), None, 1 << 23)
        Xn = sat(X + shift(O, f["f_WO"] + f["f_VB"], f["f_X"]).unsqueeze(0), 24)
        if want:
            out["scores"] = torch.where(kept, key, torch.full_like(key, NEG))
            out["attn"] = torch.div(E << 16, DEN.clamp(min=1), rounding_mode="floor")
    else:
        dt = X.dtype
        tau = float(op.params["TAU"][0])
        sc = (CNT.to(dt) * tau).masked_fill(~vis, float("-inf"))
        if kstar < Sk:
            order = torch.sort(sc, dim=-1, descending=True, stable=True).indices[..., :kstar]
            sc = torch.full_like(sc, float("-inf")).scatter(-1, order, sc.gather(-1, order))
        A = torch.softmax(sc, dim=-1)
        ctx = torch.matmul(A, vh.to(dt)).transpose(1, 2).reshape(B, S, D)
        O = torch.matmul(ctx, _p(op, "WO", dev, dt).t())
        Xn = X + O.unsqueeze(0)
        if want:
            out["scores"] = sc
            out["attn"] = A
    out["X"] = Xn
    if want:
        out["O"] = O
        out["VB"] = VB
    return out
