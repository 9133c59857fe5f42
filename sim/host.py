"""Host-side ops (docs/fixed_point.md §5), integer for a quantized graph, float for the float IR.

`run_host_op(op, inputs) -> outputs` is the one entry point; the integer emulator, the float IR
interpreter and the Lava backend's host processes all call it, so they compute identical host
results. Tensors may live on CPU or CUDA; integer tensors are int64.

Inputs / outputs per op kind (B = batch rows, K = frames, D = width):

| kind | inputs | outputs |
|---|---|---|
| embedding | ids: int64 [B] | H: [B, D] |
| rmsnorm_drive | H: [B, D] | drive: [B, n] (port I of the stage's drive target, its f_V) |
| ponder_residual | H: [B, D], F: [K, B, D] (the readout population's out per frame) | H: [B, D] |
| decode | F: [K, B, D] (output-neuron payloads) | Y: [B, D] |
| lm_head | Y: [B, D] | logits: float32 [B, V] (de-quantized), LOG: int64 [B, V] (integer graphs) |
| sample | logits: [B, V]; optional temperature (float, ≤0 greedy), top_k (int), generator | ids: int64 [B] |

An op is integer when the quantizer marked it (`op.meta["quantized"]`); its fracs are in `op.fmt`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ns_compile.sim.intops import exact_matmul, lut_sigmoid, sat, shift

_CACHE: dict = {}


def param(op_or_obj, key: str, device, dtype) -> torch.Tensor:
    """op.params[key] as a tensor on `device` (cached per array object, device and dtype)."""
    arr = op_or_obj.params[key] if hasattr(op_or_obj, "params") else op_or_obj[key]
    return as_tensor(arr, device, dtype)


def as_tensor(arr, device, dtype) -> torch.Tensor:
    ck = (id(arr), str(device), dtype)
    hit = _CACHE.get(ck)
    if hit is not None and hit[0] is arr:
        return hit[1]
    t = torch.as_tensor(np.asarray(arr)).to(device=device, dtype=dtype)
    _CACHE[ck] = (arr, t)
    return t


def clear_cache():
    _CACHE.clear()


def is_int(op) -> bool:
    return bool(op.meta.get("quantized"))


# ---- RMSNorm (integer rule of §5 and its float original) ---------------------------------------

def rmsnorm_int(x: torch.Tensor, f_x: int, g: torch.Tensor, f_g: int, f_out: int, eps: float) -> torch.Tensor:
    """§5 RMSNorm + drive on integers: x [B, D] at frac f_x, g [D] at f_g -> sat_24 at f_out."""
    D = x.shape[-1]
    ms = (x * x).sum(-1).tolist()                 # exact int64 → Python ints
    epsi = math.floor(eps * D * 2.0 ** (2 * f_x) + 0.5)
    e2 = 60 + 2 * f_x
    num = (D << e2) if e2 >= 0 else (D >> -e2)
    r = [math.isqrt(num // (m + epsi)) if (m + epsi) > 0 else 0 for m in ms]
    R = torch.tensor(r, dtype=torch.int64, device=x.device).unsqueeze(-1)
    T = (x * R) >> 30
    return sat(shift(T * g, f_x + f_g, f_out), 24)


def rmsnorm_float(x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


# ---- the ops -------------------------------------------------------------------------------------

def _embedding(op, inp):
    ids = inp["ids"]
    if is_int(op):
        return {"H": param(op, "E", ids.device, torch.int64)[ids]}
    return {"H": param(op, "E", ids.device, inp.get("dtype", torch.float64))[ids]}


def _rmsnorm_drive(op, inp, eps):
    H = inp["H"]
    if is_int(op):
        f = op.fmt
        return {"drive": rmsnorm_int(H, f["f_X"], param(op, "G", H.device, torch.int64), f["f_G"], f["f_out"], eps)}
    return {"drive": rmsnorm_float(H, param(op, "G", H.device, H.dtype), eps)}


def _ponder(op, inp, cfg):
    H, F = inp["H"], inp["F"]                       # F: [K, B, D]
    dev = H.device
    if is_int(op):
        f = op.fmt
        wh = param(op, "WH", dev, torch.float64).reshape(1, -1)
        Z = exact_matmul(F, wh)[..., 0] + param(op, "BH", dev, torch.int64)[0]          # [K, B]
        lut = param(op, "LUT_sigmoid", dev, torch.int64)
        P = lut_sigmoid(Z, f["f_F"] + f["f_WH"], lut).clamp(1, 4095)
        S = torch.full_like(P[0], 4096)
        NUM = torch.zeros_like(F[0])
        DEN = torch.zeros_like(S)
        for k in range(F.shape[0]):
            Lk = (P[k] * S) >> 12
            S = (S * (4096 - P[k])) >> 12
            NUM = NUM + Lk.unsqueeze(-1) * F[k]
            DEN = DEN + Lk
        AGG = torch.div(NUM, DEN.clamp(min=1).unsqueeze(-1), rounding_mode="floor")
        delta = exact_matmul(AGG, param(op, "WO", dev, torch.float64))
        return {"H": sat(H + shift(delta, f["f_WO"] + f["f_F"], f["f_H"]), 24), "AGG": AGG, "P": P}
    dt = H.dtype
    z = torch.matmul(F, param(op, "WH", dev, dt)) + param(op, "BH", dev, dt)[0]           # [K, B]
    p = torch.sigmoid(z).clamp(cfg.get("halt_clamp", 1e-7), 1.0 - cfg.get("halt_clamp", 1e-7))
    log_s = torch.cumsum(torch.log1p(-p), dim=0)
    surv = torch.exp(torch.cat([torch.zeros_like(log_s[:1]), log_s[:-1]], dim=0))
    lam = p * surv
    lam_hat = lam / (lam.sum(0, keepdim=True) + cfg.get("ponder_eps", 1e-8))
    agg = (lam_hat.unsqueeze(-1) * F).sum(0)
    delta = torch.matmul(agg, param(op, "WO", dev, dt).t())
    return {"H": H + delta, "AGG": agg, "P": p}


def _decode(op, inp, eps):
    F = inp["F"]
    dev = F.device
    M = F.sum(0)
    if is_int(op):
        f = op.fmt
        Z = exact_matmul(M, param(op, "WD", dev, torch.float64))
        Z = sat(shift(Z, f["f_WD"] + f["f_O"], f["f_Z"]) + param(op, "BD", dev, torch.int64), 24)
        Y = rmsnorm_int(Z, f["f_Z"], param(op, "G", dev, torch.int64), f["f_G"], f["f_Y"], eps)
        return {"Y": Y, "Z": Z, "M": M}
    dt = F.dtype
    Z = torch.matmul(M, param(op, "WD", dev, dt).t()) + param(op, "BD", dev, dt)
    return {"Y": rmsnorm_float(Z, param(op, "G", dev, dt), eps), "Z": Z, "M": M}


def _lm_head(op, inp):
    Y = inp["Y"]
    if is_int(op):
        f = op.fmt
        E = param(op, "E", Y.device, torch.float64)
        LOG = exact_matmul(Y, E, op.meta.get("E_max"))
        return {"logits": (LOG.to(torch.float64) * 2.0 ** -(f["f_H"] + f["f_Y"])).float(), "LOG": LOG}
    return {"logits": torch.matmul(Y, param(op, "E", Y.device, Y.dtype).t()).float()}


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, generator=None) -> torch.Tensor:
    """§5 sampling: greedy (lowest index on ties) when temperature ≤ 0; else logits/T, keep the
    top k (ties with the k-th survive), softmax, multinomial with `generator` (CPU)."""
    logits = logits.float().cpu()
    if temperature is None or temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def run_host_op(op, inputs: dict, config: dict | None = None) -> dict:
    """Execute one HostOp (docs/fixed_point.md §5). `config`: the graph's config (eps, clamps);
    defaults are NeuronSpark's."""
    cfg = config or {}
    eps = cfg.get("eps", 1e-6)
    k = op.kind
    if k == "embedding":
        return _embedding(op, inputs)
    if k == "rmsnorm_drive":
        return _rmsnorm_drive(op, inputs, eps)
    if k == "ponder_residual":
        return _ponder(op, inputs, cfg)
    if k == "decode":
        return _decode(op, inputs, eps)
    if k == "lm_head":
        return _lm_head(op, inputs)
    if k == "sample":
        return {"ids": sample(inputs["logits"], inputs.get("temperature", 0.0), inputs.get("top_k", 0),
                              inputs.get("generator"))}
    raise ValueError(f"unknown host op kind {k!r}")
