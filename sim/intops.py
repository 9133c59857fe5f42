"""Integer primitives of docs/fixed_point.md §0-§4, on torch int64 tensors (CPU or CUDA).

These are the only places where the emulator rounds, wraps or saturates.
"""
from __future__ import annotations

import torch

_F64_EXACT = 1 << 53


def shift(x: torch.Tensor, f_from: int, f_to: int) -> torch.Tensor:
    """shift(X, f_from → f_to): left shift when f_to ≥ f_from, else arithmetic (floor) right shift."""
    d = int(f_to) - int(f_from)
    if d >= 0:
        return x << d if d else x
    return x >> (-d)


def sat(x: torch.Tensor, n: int) -> torch.Tensor:
    """sat_n: clamp to [−(2^(n−1) − 1), 2^(n−1) − 1] (symmetric)."""
    m = (1 << (n - 1)) - 1
    return x.clamp(-m, m)


def wrap32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement wrap to int32."""
    return torch.remainder(x + (1 << 31), 1 << 32) - (1 << 31)


def decay(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sign(V) · ((|V| · B) >> 12): multiply by B/4096 rounded toward zero."""
    return torch.sign(v) * ((v.abs() * b) >> 12)


def lut_index(x: torch.Tensor, f_x: int) -> torch.Tensor:
    """§4: idx = clamp(shift(x, f_x → 8) + 2048, 0, 4095)."""
    return (shift(x, f_x, 8) + 2048).clamp(0, 4095)


def lut_sigmoid(x: torch.Tensor, f_x: int, table: torch.Tensor) -> torch.Tensor:
    return table[lut_index(x, f_x)]


def lut_softplus(x: torch.Tensor, f_x: int, table: torch.Tensor) -> torch.Tensor:
    s8 = shift(x, f_x, 8)
    inside = table[(s8 + 2048).clamp(0, 4095)]
    return torch.where(s8 >= 2048, shift(x, f_x, 12), inside)


def exact_matmul(x: torch.Tensor, w: torch.Tensor, w_max: int | None = None, x_max: int | None = None) -> torch.Tensor:
    """Exact integer x @ wᵀ. x: int64 [..., n]; w: float64 [m, n] holding integers (|w| ≤ w_max).

    Uses float64 GEMM when every partial sum is provably below 2^53; otherwise splits x into
    16-bit limbs (each limb's GEMM is exact) and recombines in int64.
    """
    n = x.shape[-1]
    if w_max is None:
        w_max = int(w.abs().max().item()) if w.numel() else 0
    if x_max is None:                 # a static bound (e.g. the payload width) avoids a device sync
        x_max = int(x.abs().max().item()) if x.numel() else 0
    if x_max * w_max * max(n, 1) < _F64_EXACT:
        return torch.matmul(x.to(torch.float64), w.t()).to(torch.int64)
    if x_max < (1 << 16):             # limbs cannot help: plain int64 product (CPU)
        if x.device.type != "cpu":
            return exact_matmul(x.cpu(), w.cpu(), w_max).to(x.device)
        return torch.matmul(x, w.to(torch.int64).t())
    s = 16
    lo = x & ((1 << s) - 1)           # 0 .. 2^16-1
    hi = x >> s                       # floor
    return (exact_matmul(hi, w, w_max) << s) + exact_matmul(lo, w, w_max)
