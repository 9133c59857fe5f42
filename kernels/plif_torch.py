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
