"""Dispatch for the PLIF scans.

    plif_scan(beta, u, theta, v0)          per-step beta/theta (S, *cols)  -> (spike, v_post)
    plif_scan_rowparam(beta, u, theta, v0) beta/theta constant over time    -> (spike, v_post)

Both are differentiable (sigmoid surrogate, alpha = 4, reset not detached unless detach_reset=True).

Backend choice (`backend=None` / "auto"):
  - "triton" when the tensors are on CUDA and triton imports;
  - "triton" through Triton's interpreter for CPU tensors when TRITON_INTERPRET=1 (how CI tests the kernels);
  - "torch" otherwise: the exact sequential loop (`plif_scan_torch`) forward and its sequential adjoint.
`backend="triton"` or `"torch"` forces one (a CPU tensor with "triton" runs in the interpreter).

Keyword options (all keyword-only, the positional signature is the reference model's):
  return_spike=False  inference mode: the kernel writes only v_post and the call returns (None, v_post);
  detach_reset        gradient with s.detach() in the reset (the upstream kernel's formula);
  alpha               surrogate steepness;
  fwd_config/bwd_config  (BLOCK_C, UNROLL, PREFETCH, num_warps) override for benchmarks/tests.
Outputs are in u's dtype; arithmetic is fp32.
"""
from __future__ import annotations

import math
import os

import torch

from ns_compile.kernels.plif_torch import plif_bwd_torch, plif_scan_torch

_BACKENDS = ("auto", "triton", "torch")
_triton_ok = None


def triton_available() -> bool:
    global _triton_ok
    if _triton_ok is None:
        try:
            import triton  # noqa: F401

            from ns_compile.kernels import plif_triton  # noqa: F401

            _triton_ok = True
        except Exception:
            _triton_ok = False
    return _triton_ok


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def select_backend(device: torch.device, backend: str | None = None) -> str:
    backend = backend or "auto"
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend != "auto":
        if backend == "triton" and not triton_available():
            raise RuntimeError("backend='triton' requested but triton cannot be imported")
        return backend
    if triton_available() and (device.type == "cuda" or (device.type == "cpu" and _interpret())):
        return "triton"
    return "torch"


def _forward(beta, u, theta, v0, row_param, write_spike, out_dtype, backend, fwd_config):
    """(S, C) forward without autograd. Returns (spike or None, v_post) in out_dtype."""
    if backend == "triton":
        from ns_compile.kernels.plif_triton import plif_fwd_triton

        return plif_fwd_triton(beta, u, theta, v0, row_param=row_param, write_spike=write_spike,
                               out_dtype=out_dtype, config=fwd_config)
    # plif_scan_torch computes in fp32 and stores in its u's dtype: an fp32 u gives fp32 outputs exactly
    s, v = plif_scan_torch(beta, u.float() if out_dtype == torch.float32 else u, theta, v0)
    if v.dtype != out_dtype:
        s, v = s.to(out_dtype), v.to(out_dtype)
    return (s if write_spike else None), v


class _PLIFScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, beta, u, theta, v0, row_param, return_spike, detach_reset, alpha, backend,
                fwd_config, bwd_config):
        # fp32 v_post is kept for the backward whatever the output dtype (the adjoint needs v[k-1]).
        s, v32 = _forward(beta, u, theta, v0, row_param, return_spike, torch.float32, backend, fwd_config)
        ctx.save_for_backward(beta, u, theta, v0, v32)
        ctx.cfg = (row_param, return_spike, detach_reset, alpha, backend, bwd_config)
        ctx.set_materialize_grads(False)
        v = v32 if u.dtype == torch.float32 else v32.to(u.dtype)
        if return_spike:
            s = s if u.dtype == torch.float32 else s.to(u.dtype)
            return s, v
        return v

    @staticmethod
    def backward(ctx, *grads):
        row_param, return_spike, detach_reset, alpha, backend, bwd_config = ctx.cfg
        beta, u, theta, v0, v32 = ctx.saved_tensors
        if return_spike:
            ds, dv = grads
        else:
            ds, dv = None, grads[0]
        if backend == "triton":
            from ns_compile.kernels.plif_triton import plif_bwd_triton

            db, du, dth, dv0 = plif_bwd_triton(beta, u, theta, v0, v32, dv, ds, row_param=row_param,
                                               detach_reset=detach_reset, alpha=alpha, config=bwd_config)
        else:
            db, du, dth, dv0 = plif_bwd_torch(beta, u, theta, v0, v32, dv, ds, row_param=row_param,
                                              detach_reset=detach_reset, alpha=alpha)
        need = ctx.needs_input_grad
        return (db.to(beta.dtype) if need[0] else None, du.to(u.dtype) if need[1] else None,
                dth.to(theta.dtype) if need[2] else None, dv0.to(v0.dtype) if need[3] else None,
                None, None, None, None, None, None, None)


def _scan(beta, u, theta, v0, row_param, return_spike, backend, detach_reset, alpha, fwd_config, bwd_config):
    shape = u.shape
    S = shape[0]
    C = math.prod(shape[1:])
    u2 = u.reshape(S, C)
    if v0 is None:
        v0 = torch.zeros(C, dtype=torch.float32, device=u.device)
    v02 = v0.reshape(C)
    if row_param:
        b2 = beta.expand(shape[1:]).reshape(C)
        t2 = theta.expand(shape[1:]).reshape(C)
    else:
        b2 = beta.reshape(S, C)
        t2 = theta.reshape(S, C)
    be = select_backend(u.device, backend)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (beta, u, theta, v0) if isinstance(t, torch.Tensor))
    if needs_grad:
        out = _PLIFScanFn.apply(b2, u2, t2, v02, row_param, return_spike, detach_reset, float(alpha), be,
                                fwd_config, bwd_config)
        s, v = out if return_spike else (None, out)
    else:
        s, v = _forward(b2, u2, t2, v02, row_param, return_spike, u.dtype, be, fwd_config)
    return (s.reshape(shape) if s is not None else None), v.reshape(shape)


def plif_scan(beta, u, theta, v0, *, return_spike: bool = True, backend: str | None = None,
              detach_reset: bool = False, alpha: float = 4.0, fwd_config=None, bwd_config=None):
    """Per-step parameters. beta, u, theta: (S, *cols); v0: (*cols) (None = zeros).
    Returns (spike, v_post), or (None, v_post) with return_spike=False."""
    return _scan(beta, u, theta, v0, False, return_spike, backend, detach_reset, alpha, fwd_config, bwd_config)


def plif_scan_rowparam(beta, u, theta, v0, *, return_spike: bool = True, backend: str | None = None,
                       detach_reset: bool = False, alpha: float = 4.0, fwd_config=None, bwd_config=None):
    """Parameters constant over time. beta, theta: (*cols) or broadcastable to u[0]; u: (S, *cols)."""
    return _scan(beta, u, theta, v0, True, return_spike, backend, detach_reset, alpha, fwd_config, bwd_config)
