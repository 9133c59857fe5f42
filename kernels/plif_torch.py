"""The exact sequential PLIF recurrence in plain PyTorch (the reference every kernel matches).

v_pre[k] = beta[k] * v[k-1] + u[k];  s[k] = [v_pre[k] >= theta[k]];  v[k] = v_pre[k] - theta[k] * s[k]

Computed in fp32 whatever the input dtype; outputs are stored in u's dtype, as the Triton
kernels do. This is NOT the upstream CPU fallback (a Hillis-Steele scan with a 3-iteration
spike fixed point), which is wrong for sequences longer than a few steps.
"""
from __future__ import annotations

import torch


def plif_scan_torch(beta: torch.Tensor, u: torch.Tensor, theta: torch.Tensor, v0: torch.Tensor):
    """beta, u, theta: (S, C) (beta/theta may also be (C,) = constant over time); v0: (C,)."""
    S = u.shape[0]
    out_dtype = u.dtype
    row_beta = beta.dim() == u.dim() - 1
    row_theta = theta.dim() == u.dim() - 1
    b = beta.float()
    th = theta.float()
    uf = u.float()
    v = v0.float()
    spikes = torch.empty(u.shape, dtype=out_dtype, device=u.device)
    vpost = torch.empty(u.shape, dtype=out_dtype, device=u.device)
    for k in range(S):
        bk = b if row_beta else b[k]
        tk = th if row_theta else th[k]
        v_pre = bk * v + uf[k]
        s = (v_pre >= tk).float()
        v = v_pre - tk * s
        spikes[k] = s
        vpost[k] = v
    return spikes, vpost


def plif_bwd_torch(beta, u, theta, v0, v_post32, dv, ds, *, row_param: bool, detach_reset: bool = False,
                   alpha: float = 4.0):
    """The sequential adjoint of the scan in PyTorch (same formulas as the Triton backward, see
    plif_triton.py). v_post32: the forward's v_post in fp32; dv/ds: (S, C) or None.
    Returns (dbeta, du, dtheta, dv0) in fp32 (dbeta/dtheta (C,) with row_param, else (S, C))."""
    S, C = u.shape
    b = beta.float()
    th = theta.float()
    uf = u.float()
    v0f = v0.float()
    g = torch.zeros(C, dtype=torch.float32, device=u.device)
    du = torch.empty((S, C), dtype=torch.float32, device=u.device)
    if row_param:
        dbeta = torch.zeros(C, dtype=torch.float32, device=u.device)
        dtheta = torch.zeros(C, dtype=torch.float32, device=u.device)
    else:
        dbeta = torch.empty((S, C), dtype=torch.float32, device=u.device)
        dtheta = torch.empty((S, C), dtype=torch.float32, device=u.device)
    for k in range(S - 1, -1, -1):
        bk = b if row_param else b[k]
        tk = th if row_param else th[k]
        vprev = v_post32[k - 1].float() if k > 0 else v0f
        v_pre = bk * vprev + uf[k]
        s = (v_pre >= tk).float()
        x = v_pre - tk
        e = torch.exp(torch.clamp(-alpha * x, max=88.0))
        sig = 1.0 / (1.0 + e)
        sg = alpha * sig * (1.0 - sig)
        total = g + dv[k].float() if dv is not None else g
        dsk = ds[k].float() if ds is not None else torch.zeros_like(g)
        gs = dsk if detach_reset else dsk - tk * total
        gpre = total + gs * sg
        du[k] = gpre
        dbk = gpre * vprev
        dthk = -(total * s) - gs * sg
        if row_param:
            dbeta += dbk
            dtheta += dthk
        else:
            dbeta[k] = dbk
            dtheta[k] = dthk
        g = gpre * bk
    return dbeta, du, dtheta, g
