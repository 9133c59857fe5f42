"""Triton kernels for the exact PLIF scan (forward) and its surrogate-gradient adjoint (backward).

Recurrence, fp32 arithmetic, column c independent of every other column:

    v_pre[k] = beta[k] * v[k-1] + u[k];   s[k] = [v_pre[k] >= theta[k]];   v[k] = v_pre[k] - theta[k] * s[k]

Layout: time-major (S, C) contiguous, v0 (C,). Row-parameter variant: beta, theta (C,), constant over time.
Outputs (spike, v_post) are stored in the dtype of the output buffers (= u's dtype in `plif.py`).

Why the kernels look the way they do (see benchmarks/bench_plif_scan.py and kernels/NOTES.md):
the only parallelism of an exact scan is across columns (7168 at the 0.9B block shape = 224 warps for
the whole GPU), and every time step is a dependent update, so a "load, compute, store" loop is bound by
memory latency, not bandwidth. Each program therefore owns a narrow column strip (BLOCK_C, 32 by
default = one warp, one 128-byte line per row) and walks time in tiles of UNROLL steps: it first issues
the loads of all UNROLL rows of the tile (tl.static_range, values kept in a tuple of registers), then runs
the UNROLL dependent updates. With PREFETCH the loads of tile n+1 are issued before the updates of tile n
(a register double buffer), so memory latency overlaps with the dependent chain. Tails (S not a multiple
of UNROLL, C not a multiple of BLOCK_C) are masked.

The kernels are written as plain Python functions and wrapped per use: `triton.jit` (compiled) for CUDA
tensors, Triton's interpreter for CPU tensors (TRITON_INTERPRET=1 in CI). That makes the choice
independent of when the environment variable was set relative to `import triton`.

Exactness: the forward is compiled with `enable_fp_fusion=False`, so beta*v + u is a rounded multiply
followed by a rounded add, exactly what the PyTorch loop computes; spikes and v_post are bit-identical to
`plif_scan_torch` on the same device.

Backward (sigmoid surrogate, alpha = 4 by default, exponent clamped at 88): with x = v_pre - theta,
sg = alpha * sig(alpha x) * (1 - sig(alpha x)), walking k = S-1 .. 0 with carry g (gradient w.r.t. v[k]
coming from step k+1):

    total = dv[k] + g
    gs    = ds[k] - theta[k] * total        (reset not detached: s also acts through v = v_pre - theta*s)
          = ds[k]                           (DETACH_RESET: the reset uses s.detach(); the formula of the
                                             upstream kernel as written in research/neuronspark.md §4.4)
    gpre  = total + gs * sg                 -> du[k] = gpre, dbeta[k] = gpre * v[k-1]
    dtheta[k] = -total * s[k] - gs * sg
    g     = gpre * beta[k]                  -> dv0 = g after k = 0

The backward recomputes v_pre = beta*v[k-1] + u (bit-identical to the forward) from the saved fp32
v_post, so spikes need not be saved. The row-parameter backward sums dbeta, dtheta over time per column.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = [
    "plif_fwd_triton",
    "plif_bwd_triton",
    "FWD_CONFIGS",
    "BWD_CONFIGS",
    "default_fwd_config",
    "default_bwd_config",
]


# --------------------------------------------------------------------------------------------------
# kernels (plain functions; wrapped by _compiled()/_interpreted() below)
# --------------------------------------------------------------------------------------------------
def _plif_fwd_kernel(
    beta_ptr, u_ptr, theta_ptr, v0_ptr, spk_ptr, v_ptr,
    S, C,
    ROW_PARAM: tl.constexpr, WRITE_SPIKE: tl.constexpr, OUT_BF16: tl.constexpr, I64: tl.constexpr,
    BLOCK_C: tl.constexpr, UNROLL: tl.constexpr, PREFETCH: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    v = tl.load(v0_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    if ROW_PARAM:
        b_row = tl.load(beta_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        th_row = tl.load(theta_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    out_ty = v_ptr.dtype.element_ty

    if PREFETCH:
        # prologue: tile 0's loads
        us = ()
        bs = ()
        ths = ()
        for i in tl.static_range(UNROLL):
            if I64:
                off = i * C + cols.to(tl.int64)
            else:
                off = i * C + cols
            m = cmask & (i < S)
            us = us + (tl.load(u_ptr + off, mask=m, other=0.0),)
            if not ROW_PARAM:
                bs = bs + (tl.load(beta_ptr + off, mask=m, other=0.0),)
                ths = ths + (tl.load(theta_ptr + off, mask=m, other=0.0),)
        for t0 in range(0, S, UNROLL):
            # issue the next tile's loads before this tile's dependent updates
            nus = ()
            nbs = ()
            nths = ()
            for i in tl.static_range(UNROLL):
                t = t0 + UNROLL + i
                if I64:
                    off = t.to(tl.int64) * C + cols
                else:
                    off = t * C + cols
                m = cmask & (t < S)
                nus = nus + (tl.load(u_ptr + off, mask=m, other=0.0),)
                if not ROW_PARAM:
                    nbs = nbs + (tl.load(beta_ptr + off, mask=m, other=0.0),)
                    nths = nths + (tl.load(theta_ptr + off, mask=m, other=0.0),)
            for i in tl.static_range(UNROLL):
                t = t0 + i
                if I64:
                    off = t.to(tl.int64) * C + cols
                else:
                    off = t * C + cols
                m = cmask & (t < S)
                if ROW_PARAM:
                    b = b_row
                    th = th_row
                else:
                    b = bs[i].to(tl.float32)
                    th = ths[i].to(tl.float32)
                v_pre = b * v + us[i].to(tl.float32)
                s = (v_pre >= th).to(tl.float32)
                v = v_pre - th * s
                if OUT_BF16:
                    # round to nearest even by hand: the same bits as cvt.rn.bf16.f32 (and torch's cast), and
                    # unlike the interpreter's own fp32->bf16 conversion, which truncates
                    bits = v.to(tl.uint32, bitcast=True)
                    bits = bits + 0x7FFF + ((bits >> 16) & 1)
                    tl.store(v_ptr + off, (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=m)
                else:
                    tl.store(v_ptr + off, v.to(out_ty), mask=m)
                if WRITE_SPIKE:
                    tl.store(spk_ptr + off, s.to(out_ty), mask=m)
            us = nus
            if not ROW_PARAM:
                bs = nbs
                ths = nths
    else:
        for t0 in range(0, S, UNROLL):
            us = ()
            bs = ()
            ths = ()
            for i in tl.static_range(UNROLL):
                t = t0 + i
                if I64:
                    off = t.to(tl.int64) * C + cols
                else:
                    off = t * C + cols
                m = cmask & (t < S)
                us = us + (tl.load(u_ptr + off, mask=m, other=0.0),)
                if not ROW_PARAM:
                    bs = bs + (tl.load(beta_ptr + off, mask=m, other=0.0),)
                    ths = ths + (tl.load(theta_ptr + off, mask=m, other=0.0),)
            for i in tl.static_range(UNROLL):
                t = t0 + i
                if I64:
                    off = t.to(tl.int64) * C + cols
                else:
                    off = t * C + cols
                m = cmask & (t < S)
                if ROW_PARAM:
                    b = b_row
                    th = th_row
                else:
                    b = bs[i].to(tl.float32)
                    th = ths[i].to(tl.float32)
                v_pre = b * v + us[i].to(tl.float32)
                s = (v_pre >= th).to(tl.float32)
                v = v_pre - th * s
                if OUT_BF16:
                    # round to nearest even by hand: the same bits as cvt.rn.bf16.f32 (and torch's cast), and
                    # unlike the interpreter's own fp32->bf16 conversion, which truncates
                    bits = v.to(tl.uint32, bitcast=True)
                    bits = bits + 0x7FFF + ((bits >> 16) & 1)
                    tl.store(v_ptr + off, (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=m)
                else:
                    tl.store(v_ptr + off, v.to(out_ty), mask=m)
                if WRITE_SPIKE:
                    tl.store(spk_ptr + off, s.to(out_ty), mask=m)


def _plif_bwd_kernel(
    beta_ptr, u_ptr, theta_ptr, v0_ptr, vpost_ptr, dv_ptr, ds_ptr,
    dbeta_ptr, du_ptr, dtheta_ptr, dv0_ptr,
    S, C, ALPHA,
    ROW_PARAM: tl.constexpr, HAS_DV: tl.constexpr, HAS_DS: tl.constexpr, DETACH_RESET: tl.constexpr,
    I64: tl.constexpr, BLOCK_C: tl.constexpr, UNROLL: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    v0 = tl.load(v0_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    if ROW_PARAM:
        b_row = tl.load(beta_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        th_row = tl.load(theta_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        db_acc = tl.full([BLOCK_C], 0.0, tl.float32)
        dth_acc = tl.full([BLOCK_C], 0.0, tl.float32)
    g = tl.full([BLOCK_C], 0.0, tl.float32)
    n_tiles = (S + UNROLL - 1) // UNROLL
    for j in range(0, n_tiles):
        t_hi = S - 1 - j * UNROLL
        # loads of the whole tile first (steps t_hi, t_hi-1, ..., t_hi-UNROLL+1)
        us = ()
        bs = ()
        ths = ()
        vps = ()
        dvs = ()
        dss = ()
        for i in tl.static_range(UNROLL):
            t = t_hi - i
            if I64:
                off = t.to(tl.int64) * C + cols
            else:
                off = t * C + cols
            m = cmask & (t >= 0)
            us = us + (tl.load(u_ptr + off, mask=m, other=0.0),)
            if not ROW_PARAM:
                bs = bs + (tl.load(beta_ptr + off, mask=m, other=0.0),)
                ths = ths + (tl.load(theta_ptr + off, mask=m, other=0.0),)
            vps = vps + (tl.load(vpost_ptr + off - C, mask=m & (t > 0), other=0.0),)
            if HAS_DV:
                dvs = dvs + (tl.load(dv_ptr + off, mask=m, other=0.0),)
            if HAS_DS:
                dss = dss + (tl.load(ds_ptr + off, mask=m, other=0.0),)
        for i in tl.static_range(UNROLL):
            t = t_hi - i
            if I64:
                off = t.to(tl.int64) * C + cols
            else:
                off = t * C + cols
            valid = t >= 0
            m = cmask & valid
            if ROW_PARAM:
                b = b_row
                th = th_row
            else:
                b = bs[i].to(tl.float32)
                th = ths[i].to(tl.float32)
            vprev = tl.where(t > 0, vps[i].to(tl.float32), v0)
            v_pre = b * vprev + us[i].to(tl.float32)
            s = (v_pre >= th).to(tl.float32)
            x = v_pre - th
            e = tl.exp(tl.minimum(-ALPHA * x, 88.0))
            sig = 1.0 / (1.0 + e)
            sg = ALPHA * sig * (1.0 - sig)
            if HAS_DV:
                total = dvs[i].to(tl.float32) + g
            else:
                total = g
            if HAS_DS:
                ds = dss[i].to(tl.float32)
            else:
                ds = tl.full([BLOCK_C], 0.0, tl.float32)
            if DETACH_RESET:
                gs = ds
            else:
                gs = ds - th * total
            gpre = total + gs * sg
            dth = -(total * s) - gs * sg
            dbeta = gpre * vprev
            g = tl.where(valid, gpre * b, g)
            tl.store(du_ptr + off, gpre, mask=m)
            if ROW_PARAM:
                db_acc += tl.where(valid, dbeta, 0.0)
                dth_acc += tl.where(valid, dth, 0.0)
            else:
                tl.store(dbeta_ptr + off, dbeta, mask=m)
                tl.store(dtheta_ptr + off, dth, mask=m)
    tl.store(dv0_ptr + cols, g, mask=cmask)
    if ROW_PARAM:
        tl.store(dbeta_ptr + cols, db_acc, mask=cmask)
        tl.store(dtheta_ptr + cols, dth_acc, mask=cmask)


# --------------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------------
# (BLOCK_C, UNROLL, PREFETCH, num_warps). The defaults come from the sweep of benchmarks/bench_plif_scan.py on
# an H100 (kernels/NOTES.md): at S = 8192, C = 7168 fp32, (32, 32, prefetch, 1 warp) ran the per-step forward
# in 530 us (1.77 TB/s) and the row-parameter one in 285 us, and was also the best bf16 config (471 / 235 us);
# at S = 16 the configs are within the timing noise of one another (5-7 us).
# Candidates stay small: a tile of UNROLL steps is unrolled into straight-line code, and ptxas takes minutes on
# the larger ones (e.g. 64 columns x 32 steps on one warp: 255 registers + a stack frame, ~80 s to compile).
FWD_CONFIGS = [
    (32, 32, True, 1),
    (32, 16, True, 1),
    (32, 16, False, 1),
    (16, 32, True, 1),
    (64, 16, True, 2),
]
BWD_CONFIGS = [
    (32, 16, False, 1),
    (32, 8, False, 1),
    (64, 8, False, 2),
    (64, 8, False, 1),
]


def default_fwd_config(S: int, C: int, row_param: bool, dtype: torch.dtype = torch.float32):
    if S <= 16:
        return (32, 16, False, 1)
    return (32, 32, True, 1)


def default_bwd_config(S: int, C: int, row_param: bool):
    # H100, S = 8192, C = 7168: per-step 1747 us (1.21 TB/s) vs 2392 us with 8-step tiles; row-param 1336 vs 1631 us
    return (32, 16, False, 1)


# Opt-in run-time tuning (config="autotune", or NS_COMPILE_PLIF_AUTOTUNE=1): the first call for a key times every
# candidate with triton.testing.do_bench and keeps the fastest. Every candidate computes bit-identical results
# (no reduction order depends on the config), so tuning changes speed only.
_TUNED: dict = {}


def _autotune(key, candidates, launch):
    if key not in _TUNED:
        from triton.testing import do_bench

        best = None
        for cfg in candidates:
            try:
                ms = do_bench(lambda: launch(cfg), warmup=5, rep=20, return_mode="median")
            except Exception:
                continue
            if best is None or ms < best[0]:
                best = (ms, cfg)
        _TUNED[key] = best[1]
    return _TUNED[key]


def _want_autotune(config) -> bool:
    return config == "autotune" or (config is None and os.environ.get("NS_COMPILE_PLIF_AUTOTUNE", "0") == "1")


# --------------------------------------------------------------------------------------------------
# wrapping: compiled for CUDA tensors, interpreted for CPU tensors
# --------------------------------------------------------------------------------------------------
_WRAPPED: dict = {}


def _compiled(fn):
    key = ("jit", fn)
    if key not in _WRAPPED:
        from triton.runtime.jit import JITFunction

        _WRAPPED[key] = JITFunction(fn)
    return _WRAPPED[key]


def _interpreted(fn):
    key = ("interp", fn)
    if key not in _WRAPPED:
        from triton.runtime.interpreter import InterpretedFunction

        _WRAPPED[key] = InterpretedFunction(fn)
    return _WRAPPED[key]


def _kernel(fn, device: torch.device):
    if device.type == "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return _compiled(fn), True
    return _interpreted(fn), False


def _s_bucket(S: int) -> int:
    """S rounded up to a power of two (capped): the tuning key, so that every prompt length does not re-tune."""
    b = 1
    while b < S and b < 4096:
        b *= 2
    return b


def _i64(S: int, C: int) -> bool:
    return (S + 1) * max(C, 1) >= 2**31 - 1


# --------------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------------
def plif_fwd_triton(beta, u, theta, v0, *, row_param: bool, write_spike: bool = True,
                    out_dtype=None, config=None):
    """u: (S, C) contiguous; beta/theta (S, C) or, with row_param, (C,); v0 (C,).
    Returns (spike or None, v_post), both (S, C) in out_dtype (default u.dtype)."""
    S, C = u.shape
    out_dtype = out_dtype or u.dtype
    u = u.contiguous()
    beta = beta.contiguous()
    theta = theta.contiguous()
    v0 = v0.contiguous()
    v_out = torch.empty((S, C), dtype=out_dtype, device=u.device)
    spk = torch.empty((S, C), dtype=out_dtype, device=u.device) if write_spike else v_out
    if S == 0 or C == 0:
        return (spk if write_spike else None), v_out
    kern, compiled = _kernel(_plif_fwd_kernel, u.device)

    def launch(cfg):
        block_c, unroll, prefetch, warps = cfg
        extra = {"num_warps": warps, "enable_fp_fusion": False} if compiled else {}
        kern[(triton.cdiv(C, block_c),)](
            beta, u, theta, v0, spk, v_out, S, C,
            ROW_PARAM=row_param, WRITE_SPIKE=write_spike, OUT_BF16=out_dtype == torch.bfloat16, I64=_i64(S, C),
            BLOCK_C=block_c, UNROLL=unroll, PREFETCH=prefetch, **extra,
        )

    if _want_autotune(config):
        config = (_autotune(("fwd", row_param, write_spike, u.dtype, beta.dtype, out_dtype, _s_bucket(S), C),
                            FWD_CONFIGS, launch) if compiled else None)
    launch(config or default_fwd_config(S, C, row_param, u.dtype))
    return (spk if write_spike else None), v_out


def plif_bwd_triton(beta, u, theta, v0, v_post32, dv, ds, *, row_param: bool, detach_reset: bool = False,
                    alpha: float = 4.0, config=None):
    """Adjoint of the scan. v_post32: the forward's v_post in fp32 (S, C). dv/ds: (S, C) or None.
    Returns (dbeta, du, dtheta, dv0), all fp32 (the caller casts with torch's round-to-nearest-even):
    dbeta/dtheta (S, C), or (C,) with row_param; du (S, C); dv0 (C,)."""
    S, C = u.shape
    u = u.contiguous()
    beta = beta.contiguous()
    theta = theta.contiguous()
    v0 = v0.contiguous()
    v_post32 = v_post32.contiguous()
    dv = dv.contiguous() if dv is not None else None
    ds = ds.contiguous() if ds is not None else None
    dev = u.device
    f32 = torch.float32
    du = torch.empty((S, C), dtype=f32, device=dev)
    if row_param:
        dbeta = torch.empty((C,), dtype=f32, device=dev)
        dtheta = torch.empty((C,), dtype=f32, device=dev)
    else:
        dbeta = torch.empty((S, C), dtype=f32, device=dev)
        dtheta = torch.empty((S, C), dtype=f32, device=dev)
    dv0 = torch.empty((C,), dtype=torch.float32, device=dev)
    if C == 0:
        return dbeta, du, dtheta, dv0
    if S == 0:
        dv0.zero_()
        if row_param:
            dbeta.zero_()
            dtheta.zero_()
        return dbeta, du, dtheta, dv0
    kern, compiled = _kernel(_plif_bwd_kernel, dev)

    def launch(cfg):
        block_c, unroll, _prefetch, warps = cfg
        extra = {"num_warps": warps, "enable_fp_fusion": False} if compiled else {}
        kern[(triton.cdiv(C, block_c),)](
            beta, u, theta, v0, v_post32,
            dv if dv is not None else u, ds if ds is not None else u,
            dbeta, du, dtheta, dv0,
            S, C, float(alpha),
            ROW_PARAM=row_param, HAS_DV=dv is not None, HAS_DS=ds is not None, DETACH_RESET=detach_reset,
            I64=_i64(S, C), BLOCK_C=block_c, UNROLL=unroll, **extra,
        )

    if _want_autotune(config):
        config = (_autotune(("bwd", row_param, dv is None, ds is None, u.dtype, beta.dtype, _s_bucket(S), C),
                            BWD_CONFIGS, launch) if compiled else None)
    launch(config or default_bwd_config(S, C, row_param))
    return dbeta, du, dtheta, dv0
