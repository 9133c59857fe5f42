"""Pieces shared by the v3 and v4 references: encoder, LayerNorm, LeakyClamp, readout, top-k."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LN_EPS = 1e-5


def to_u8(s: torch.Tensor) -> torch.Tensor:
    return s.detach().to(torch.uint8).cpu()


def put(trace: dict | None, key: str, value: torch.Tensor) -> None:
    if trace is not None:
        trace[key] = value.detach().clone().cpu() if value.dtype != torch.uint8 else value


def layer_norm(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """LayerNorm over the last dim, fp32, eps 1e-5, affine."""
    w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    return F.layer_norm(x.float(), (x.shape[-1],), w.float(), b.float(), LN_EPS).to(x.dtype)


def encoder_currents(sd: dict, cfg, ids: torch.Tensor) -> torch.Tensor:
    """ids (B, S) -> input currents (T_total, B, S, D): fast gains then slow gains (nord.md §1.2)."""
    e = F.embedding(ids, sd["encoder.embed.weight"])
    x0 = F.linear(e, sd["encoder.temporal_proj.weight"])
    fast = torch.sigmoid(sd["encoder.fast_basis"])
    slow = torch.sigmoid(sd["encoder.slow_basis"])
    ds, ss = sd["encoder.drive_scale"], sd["encoder.slow_scale"]
    steps = [fast[t] * x0 * ds for t in range(cfg.T)]
    steps += [slow[t] * x0 * ss for t in range(cfg.T_slow)]
    return torch.stack(steps, 0)


def leaky_clamp(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """x where x >= 0, else max(sigmoid(leak_raw) * x, floor) (the upstream code's semantics)."""
    leak = torch.sigmoid(sd[f"{prefix}.clamp.leak_raw"])
    floor = sd[f"{prefix}.clamp.floor"]
    return torch.where(x >= 0, x, torch.maximum(leak * x, floor))


def readout_logits(sd: dict, spikes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """EMA of the readout membrane over time + mean spike rate -> LayerNorm -> LM head."""
    a = torch.sigmoid(sd["readout_ema_raw"])
    one_minus_a = 1.0 - a
    m = torch.zeros_like(v[0])
    for t in range(v.shape[0]):
        m = a * m + one_minus_a * v[t]
    r = m + spikes.mean(0)
    return F.linear(layer_norm(r, sd, "readout_norm"), sd["lm_head.weight"])


def causal_mask(n_q: int, n_k: int, offset: int, device) -> torch.Tensor:
    """Bool (n_q, n_k): True where query at global position offset+i may see key j (j <= offset+i)."""
    qi = torch.arange(n_q, device=device)[:, None] + offset
    kj = torch.arange(n_k, device=device)[None, :]
    return kj <= qi


def topk_lowest_index(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries per row (last dim), the LOWEST index winning among equal values
    (what CUDA top-k does); set the rest to -inf. Implemented with a stable descending sort so the
    result never depends on the platform's top-k tie order."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    out = torch.full_like(scores, float("-inf"))
    return out.scatter(-1, order, scores.gather(-1, order))


def topk_indices_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries per row, descending, lowest index first among ties."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
