"""PLIF scan kernels: Triton on CUDA, an exact sequential PyTorch loop everywhere else.

Public entry points (see `plif.py`):
    plif_scan(beta, u, theta, v0)          per-step beta/theta      -> (spike, v_post)
    plif_scan_rowparam(beta, u, theta, v0) beta/theta per column    -> (spike, v_post)
Semantics (exact, fp32 arithmetic): v_pre = beta*v + u; s = v_pre >= theta; v = v_pre - theta*s.
"""
from ns_compile.kernels.plif import plif_scan, plif_scan_rowparam  # noqa: F401
