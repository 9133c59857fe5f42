"""PLIF scan: our Triton kernels vs an upstream-style kernel vs the PyTorch sequential loop, on one GPU.

One run prints, for the prefill shape of one 0.9B block (S = 512 tokens x 16 frames = 8192, C = 7168) and
the decode shape (S = 16, C = 7168), fp32 and bf16, per-step and row-parameter variants:
  - our kernel (inference mode: writes v_post only; and with spikes), time and effective TB/s;
  - "upstream-style": our own re-implementation of the upstream configuration (one program per 128 columns,
    4 warps, plain sequential loop over S, writes spike + v_post), time and TB/s;
  - the PyTorch sequential loop (`plif_scan_torch`) on the GPU (at prefill timed on fewer steps and
    extrapolated linearly; the output says so);
  - ratios, max |dv_post| and spike mismatches against the PyTorch loop;
  - our backward (per-step and row-param) time and TB/s.
Effective bandwidth = bytes the kernel must move (each input read once, each output it writes written once)
/ median time. Times: triton.testing.do_bench (CUDA events, L2 flushed before each rep, warm-up, median).

    python benchmarks/bench_plif_scan.py            # everything (sweep + tables + GPU correctness check)
    python benchmarks/bench_plif_scan.py --sweep small   # only the bf16 / backward sweeps
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_kernels():
    """ns_compile.kernels from an install, or straight from this checkout (kernels/ -> ns_compile.kernels)."""
    try:
        import ns_compile.kernels.plif  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import ns_compile  # noqa: F401

        spec = importlib.util.spec_from_file_location(
            "ns_compile.kernels", ROOT / "kernels" / "__init__.py",
            submodule_search_locations=[str(ROOT / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["ns_compile.kernels"] = mod
        spec.loader.exec_module(mod)
    from ns_compile.kernels import plif, plif_torch, plif_triton

    return plif, plif_torch, plif_triton


plif, plif_torch, plif_triton = _import_kernels()

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.testing import do_bench  # noqa: E402


# ------------------------------------------------------------------------------------------------
# the upstream configuration, re-implemented (not copied): 128 columns per program, sequential loop
# ------------------------------------------------------------------------------------------------
@triton.jit
def _upstream_style_fwd(beta_ptr, u_ptr, theta_ptr, v0_ptr, spk_ptr, v_ptr, S, C,
                        ROW_PARAM: tl.constexpr, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = cols < C
    v = tl.load(v0_ptr + cols, mask=m, other=0.0).to(tl.float32)
    if ROW_PARAM:
        b_row = tl.load(beta_ptr + cols, mask=m, other=0.0).to(tl.float32)
        th_row = tl.load(theta_ptr + cols, mask=m, other=0.0).to(tl.float32)
    for t in range(0, S):
        off = t * C + cols
        if ROW_PARAM:
            b = b_row
            th = th_row
        else:
            b = tl.load(beta_ptr + off, mask=m, other=0.0).to(tl.float32)
            th = tl.load(theta_ptr + off, mask=m, other=0.0).to(tl.float32)
        x = tl.load(u_ptr + off, mask=m, other=0.0).to(tl.float32)
        v_pre = b * v + x
        s = (v_pre >= th).to(tl.float32)
        v = v_pre - th * s
        tl.store(spk_ptr + off, s.to(spk_ptr.dtype.element_ty), mask=m)
        tl.store(v_ptr + off, v.to(v_ptr.dtype.element_ty), mask=m)


def upstream_style(beta, u, theta, v0, row_param):
    S, C = u.shape
    spk = torch.empty_like(u)
    v = torch.empty_like(u)
    _upstream_style_fwd[(triton.cdiv(C, 128),)](beta, u, theta, v0, spk, v, S, C, ROW_PARAM=row_param, BLOCK=128,
                                                 num_warps=4)
    return spk, v


# ------------------------------------------------------------------------------------------------
def make_inputs(S, C, row_param, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = (C,) if row_param else (S, C)
    beta = torch.sigmoid(torch.randn(shape, device="cuda", generator=g) + 2.0).to(dtype)
    theta = (0.1 + 0.4 * torch.rand(shape, device="cuda", generator=g)).to(dtype)
    u = (0.3 * torch.randn(S, C, device="cuda", generator=g)).to(dtype)
    v0 = torch.zeros(C, device="cuda")
    return beta, u, theta, v0


def fwd_bytes(S, C, row_param, dtype, n_out):
    e = torch.tensor([], dtype=dtype).element_size()
    reads = S * C * e + (2 * C * e if row_param else 2 * S * C * e) + C * 4
    return reads + n_out * S * C * e


def bench(fn, warmup=25, rep=100):
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")  # ms


def time_events(fn, reps=3):
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


# ------------------------------------------------------------------------------------------------
def sweep_bwd(S, C, row_param, configs):
    beta, u, theta, v0 = make_inputs(S, C, row_param, torch.float32)
    _, v32 = plif_triton.plif_fwd_triton(beta, u, theta, v0, row_param=row_param, write_spike=False)
    dv = torch.randn_like(u)
    ds = torch.randn_like(u)
    nbytes = (6 if not row_param else 4) * S * C * 4 + (3 if not row_param else 1) * S * C * 4
    res, ref = [], None
    for cfg in configs:
        f = lambda: plif_triton.plif_bwd_triton(beta, u, theta, v0, v32, dv, ds, row_param=row_param,  # noqa: E731
                                                config=cfg)
        out = f()
        ref = ref or out
        same = all(torch.equal(a, b) for a, b in zip(out, ref))
        ms = bench(f)
        tbs = nbytes / (ms * 1e-3) / 1e12
        res.append((ms, cfg, tbs, same))
        log(f"  sweep backward S={S} C={C} row={row_param} cfg={cfg}: {ms * 1e3:9.1f} us {tbs:5.2f} TB/s "
            f"identical-to-first={same}")
    res.sort()
    return res


def sweep(S, C, row_param, dtype, configs):
    beta, u, theta, v0 = make_inputs(S, C, row_param, dtype)
    ref = None
    res = []
    for cfg in configs:
        try:
            _, v = plif_triton.plif_fwd_triton(beta, u, theta, v0, row_param=row_param, write_spike=False, config=cfg)
            if ref is None:
                ref = v.clone()
            same = bool(torch.equal(v, ref))
            ms = bench(lambda: plif_triton.plif_fwd_triton(beta, u, theta, v0, row_param=row_param,
                                                           write_spike=False, config=cfg))
        except Exception as e:  # a config that does not compile is reported, not fatal
            log(f"  sweep {cfg}: FAILED {type(e).__name__}: {str(e)[:200]}")
            continue
        tbs = fwd_bytes(S, C, row_param, dtype, 1) / (ms * 1e-3) / 1e12
        res.append((ms, cfg, tbs, same))
        log(f"  sweep S={S} C={C} row={row_param} {str(dtype)[6:]} cfg={cfg}: {ms * 1e3:9.1f} us "
            f"{tbs:5.2f} TB/s  identical-to-first={same}")
    res.sort()
    return res


def one_case(name, S, C, row_param, dtype, torch_steps, results):
    beta, u, theta, v0 = make_inputs(S, C, row_param, dtype, seed=1)
    fwd = plif_triton.plif_fwd_triton
    # ours, inference mode (v_post only) and with spikes
    t_inf = bench(lambda: fwd(beta, u, theta, v0, row_param=row_param, write_spike=False))
    t_full = bench(lambda: fwd(beta, u, theta, v0, row_param=row_param, write_spike=True))
    t_up = bench(lambda: upstream_style(beta, u, theta, v0, row_param))
    t_tuned, tuned_cfg = None, []
    if name == "prefill":  # the run-time tuner, once (each candidate compiles for every dtype/variant)
        fwd(beta, u, theta, v0, row_param=row_param, write_spike=False, config="autotune")  # tunes once
        t_tuned = bench(lambda: fwd(beta, u, theta, v0, row_param=row_param, write_spike=False, config="autotune"))
        tuned_cfg = [c for k, c in plif_triton._TUNED.items() if k[0] == "fwd" and k[1] == row_param
                     and k[3] == dtype and k[6] == plif_triton._s_bucket(S) and not k[2]]
    t_tuned = t_tuned or t_inf
    # torch loop (writes spike + v_post), maybe on the first torch_steps steps only
    Sl = min(S, torch_steps)
    ul = u[:Sl]
    bl = beta if row_param else beta[:Sl]
    tl_ = theta if row_param else theta[:Sl]
    plif_torch.plif_scan_torch(bl, ul, tl_, v0)  # warm-up
    t_loop_part = time_events(lambda: plif_torch.plif_scan_torch(bl, ul, tl_, v0), reps=3)
    t_loop = t_loop_part * S / Sl
    # correctness on the same inputs: prefix of all columns (vs the loop) ...
    rs, rv = plif_torch.plif_scan_torch(bl, ul, tl_, v0)
    s_ours, v_ours = fwd(beta, u, theta, v0, row_param=row_param, write_spike=True)
    _, v_inf = fwd(beta, u, theta, v0, row_param=row_param, write_spike=False)
    d_prefix = float((v_ours[:Sl].float() - rv.float()).abs().max())
    n_spk_bad = int((s_ours[:Sl] != rs).sum())
    same_modes = bool(torch.equal(v_ours, v_inf))
    # ... and all S steps of a column slice (the loop over all S costs S launches, not S*C work)
    cs = slice(0, min(C, 512))
    rs2, rv2 = plif_torch.plif_scan_torch(beta[cs] if row_param else beta[:, cs], u[:, cs].contiguous(),
                                          theta[cs] if row_param else theta[:, cs], v0[cs])
    d_all = float((v_ours[:, cs].float() - rv2.float()).abs().max())
    n_spk_bad += int((s_ours[:, cs] != rs2).sum())
    spike_rate = float(s_ours.float().mean())
    s_up, v_up = upstream_style(beta, u, theta, v0, row_param)
    d_up = float((v_up.float() - v_ours.float()).abs().max())
    b_inf = fwd_bytes(S, C, row_param, dtype, 1)
    b_full = fwd_bytes(S, C, row_param, dtype, 2)
    r = dict(name=name, S=S, C=C, row_param=row_param, dtype=str(dtype)[6:],
             ours_inf_us=t_inf * 1e3, ours_inf_TBs=b_inf / (t_inf * 1e-3) / 1e12,
             ours_tuned_us=t_tuned * 1e3, ours_tuned_TBs=b_inf / (t_tuned * 1e-3) / 1e12,
             tuned_cfg=str(tuned_cfg[0]) if tuned_cfg else "?",
             ours_full_us=t_full * 1e3, ours_full_TBs=b_full / (t_full * 1e-3) / 1e12,
             upstream_us=t_up * 1e3, upstream_TBs=b_full / (t_up * 1e-3) / 1e12,
             torch_loop_us=t_loop * 1e3, torch_loop_TBs=b_full / (t_loop * 1e-3) / 1e12,
             torch_loop_steps_timed=Sl, torch_loop_extrapolated=Sl < S,
             speedup_inf_vs_upstream=t_up / t_inf, speedup_full_vs_upstream=t_up / t_full,
             speedup_inf_vs_torch=t_loop / t_inf, speedup_full_vs_torch=t_loop / t_full,
             max_dv_vs_loop_prefix=d_prefix, max_dv_vs_loop_colslice_allS=d_all, spike_mismatch=n_spk_bad,
             inference_mode_identical=same_modes, max_dv_upstream_style_vs_ours=d_up, spike_rate=spike_rate,
             cfg=str(plif_triton.default_fwd_config(S, C, row_param, dtype)))
    results.append(r)
    ext = f" (loop timed on {Sl} of {S} steps, extrapolated x{S / Sl:g})" if Sl < S else ""
    log(f"[{name}] S={S} C={C} {r['dtype']} {'row-param' if row_param else 'per-step'} cfg={r['cfg']}")
    log(f"   ours v_post only : {r['ours_inf_us']:10.1f} us  {r['ours_inf_TBs']:5.2f} TB/s")
    if tuned_cfg:
        log(f"   ours v_post tuned: {r['ours_tuned_us']:10.1f} us  {r['ours_tuned_TBs']:5.2f} TB/s  cfg={r['tuned_cfg']}")
    log(f"   ours spike+v_post: {r['ours_full_us']:10.1f} us  {r['ours_full_TBs']:5.2f} TB/s")
    log(f"   upstream-style   : {r['upstream_us']:10.1f} us  {r['upstream_TBs']:5.2f} TB/s")
    log(f"   torch loop       : {r['torch_loop_us']:10.1f} us  {r['torch_loop_TBs']:5.3f} TB/s{ext}")
    log(f"   ratios: upstream/ours {r['speedup_inf_vs_upstream']:.2f}x (v only), {r['speedup_full_vs_upstream']:.2f}x"
        f" (spike+v); torch/ours {r['speedup_inf_vs_torch']:.0f}x (v only), {r['speedup_full_vs_torch']:.0f}x")
    log(f"   max|dv| vs loop: first {Sl} steps all cols {d_prefix:.3g}; all steps cols 0..{cs.stop} {d_all:.3g};"
        f" spike mismatches {n_spk_bad}; spike rate {spike_rate:.3f}; v-only == full: {same_modes};"
        f" upstream-style (fma) vs ours max|dv| {d_up:.3g}")
    return r


def bwd_case(name, S, C, row_param, results):
    beta, u, theta, v0 = make_inputs(S, C, row_param, torch.float32, seed=2)
    _, v32 = plif_triton.plif_fwd_triton(beta, u, theta, v0, row_param=row_param, write_spike=False)
    dv = torch.randn_like(u)
    ds = torch.randn_like(u)
    t = bench(lambda: plif_triton.plif_bwd_triton(beta, u, theta, v0, v32, dv, ds, row_param=row_param))
    e = 4
    nbytes = (6 if not row_param else 4) * S * C * e + (3 if not row_param else 1) * S * C * e
    r = dict(name=name, S=S, C=C, row_param=row_param, bwd_us=t * 1e3, bwd_TBs=nbytes / (t * 1e-3) / 1e12,
             cfg=str(plif_triton.default_bwd_config(S, C, row_param)))
    results.append(r)
    log(f"[{name}] backward S={S} C={C} {'row-param' if row_param else 'per-step'}: {r['bwd_us']:.1f} us "
        f"{r['bwd_TBs']:.2f} TB/s (reads beta,u,theta,v_post,dv,ds; writes dbeta,du,dtheta; row: per-column sums)")


# ------------------------------------------------------------------------------------------------
# correctness of the compiled kernels through the public API (fwd + bwd) vs the torch path on the GPU
# ------------------------------------------------------------------------------------------------
class _SigHeav(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(4.0 * x)
        return g * 4.0 * sg * (1 - sg)


def _autograd_ref(beta, u, theta, v0, row, detach):
    v = v0
    ss, vs = [], []
    for k in range(u.shape[0]):
        b = beta if row else beta[k]
        th = theta if row else theta[k]
        vp = b * v + u[k].float()
        s = _SigHeav.apply(vp - th)
        v = vp - th * (s.detach() if detach else s)
        ss.append(s)
        vs.append(v)
    return torch.stack(ss), torch.stack(vs)


def gpu_check(S=300, C=1000):
    out = []
    worst = 0.0
    for row in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            for detach in (False, True):
                for spike in (True, False):
                    beta, u, theta, v0 = make_inputs(S, C, row, torch.float32, seed=3)
                    u = u.to(dtype)
                    v0 = 0.1 * torch.randn(C, device="cuda")
                    g = torch.Generator(device="cuda").manual_seed(4)
                    ws = torch.randn(S, C, device="cuda", generator=g)
                    wv = torch.randn(S, C, device="cuda", generator=g)
                    fn = plif.plif_scan_rowparam if row else plif.plif_scan
                    grads, outs = {}, {}
                    for be in ("triton", "torch", "ref"):
                        leaves = [t.detach().clone().requires_grad_() for t in (beta, u, theta, v0)]
                        if be == "ref":
                            # outputs in u's dtype like the API's, so autograd rounds the output grads the same way
                            s, v = _autograd_ref(*leaves, row, detach)
                            s, v = s.to(dtype), v.to(dtype)
                        else:
                            s, v = fn(*leaves, backend=be, return_spike=spike, detach_reset=detach)
                        loss = (v.float() * wv).sum() + ((s.float() * ws).sum() if spike else 0)
                        loss.backward()
                        grads[be] = [t.grad.float() for t in leaves]
                        outs[be] = (s, v)
                    dv_fwd = float((outs["triton"][1].detach().float() - outs["torch"][1].detach().float()).abs().max())
                    nbad = int((outs["triton"][0] != outs["torch"][0]).sum()) if spike else 0

                    def rel(a, b):
                        return max(float((x - y).abs().max()) / max(1.0, float(y.abs().max())) for x, y in zip(a, b))

                    # grads of the fp32 leaves (beta, theta, v0) to 1e-5; du is in u's dtype: with bf16 u one
                    # bf16 rounding step (<= 2^-7 relative) may separate values that agree to 1e-7 in fp32
                    fp32_idx = [0, 2, 3] if dtype != torch.float32 else [0, 1, 2, 3]
                    e_tt = rel([grads["triton"][i] for i in fp32_idx], [grads["torch"][i] for i in fp32_idx])
                    e_tr = rel([grads["triton"][i] for i in fp32_idx], [grads["ref"][i] for i in fp32_idx])
                    e_du = rel(grads["triton"][1:2], grads["torch"][1:2]) if dtype != torch.float32 else 0.0
                    tag = f"row={row} {str(dtype)[6:]} detach={detach} spike={spike}"
                    ok = (dv_fwd == 0.0 and nbad == 0 and e_tt <= 1e-5 and e_tr <= 1e-5 and e_du <= 2 ** -7)
                    worst = max(worst, e_tt)
                    out.append(dict(case=tag, fwd_max_dv=dv_fwd, spike_mismatch=nbad, grad_err_vs_torch_path=e_tt,
                                    grad_err_vs_autograd_loop=e_tr, bf16_du_err=e_du, ok=ok))
                    log(f"  check {tag}: fwd max|dv| {dv_fwd:.3g}, spikes differ {nbad}, grad rel err vs torch path "
                        f"{e_tt:.2e}, vs autograd loop {e_tr:.2e}"
                        + (f", bf16 du vs torch path {e_du:.2e}" if dtype != torch.float32 else "")
                        + f" {'OK' if ok else 'FAIL'}")
    return out


# ------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", choices=["full", "small", "none"], default="full",
                    help="full: fp32 fwd configs at prefill+decode, bf16 fwd and backward configs at prefill; "
                         "small: only the bf16 and backward ones")
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for the JSON/log (default $OUT)")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    t0 = time.time()
    prop = torch.cuda.get_device_properties(0)
    log(f"device: {prop.name}, {prop.multi_processor_count} SMs; torch {torch.__version__}; triton {triton.__version__}")
    # bandwidth ceiling: a large device-to-device copy (bytes read + written)
    a = torch.empty(2 ** 28, dtype=torch.float32, device="cuda").normal_()
    b = torch.empty_like(a)
    t_copy = bench(lambda: b.copy_(a))
    copy_tbs = 2 * a.numel() * 4 / (t_copy * 1e-3) / 1e12
    log(f"device-to-device copy: {copy_tbs:.2f} TB/s (read + write)")
    del a, b
    report = dict(device=prop.name, torch=torch.__version__, triton=triton.__version__, copy_TBs=copy_tbs)

    PRE, DEC, C = 8192, 16, 7168
    report["sweep"] = {}
    if args.sweep == "full":
        log("== config sweep (BLOCK_C, UNROLL, PREFETCH, num_warps), v_post only ==")
        step_cfgs = [(32, 16, True, 1), (32, 8, True, 1), (32, 32, True, 1), (32, 16, False, 1), (32, 32, False, 1),
                     (16, 16, True, 1), (64, 16, True, 2), (64, 8, True, 1), (128, 8, True, 4)]
        row_cfgs = [(32, 16, True, 1), (32, 32, True, 1), (32, 64, True, 1), (32, 32, False, 1), (32, 64, False, 1),
                    (64, 32, True, 2), (16, 32, True, 1)]
        for key, S, row, cfgs in [("prefill_step", PRE, False, step_cfgs), ("decode_step", DEC, False, step_cfgs),
                                  ("prefill_row", PRE, True, row_cfgs), ("decode_row", DEC, True, row_cfgs)]:
            res = sweep(S, C, row, torch.float32, cfgs)
            report["sweep"][key] = [dict(us=ms * 1e3, cfg=str(cfg), TBs=tbs, identical=same) for ms, cfg, tbs, same in res]
            if res:
                log(f"  best {key}: {res[0][1]} {res[0][0] * 1e3:.1f} us {res[0][2]:.2f} TB/s")

    if args.sweep in ("full", "small"):
        log("== bf16 forward and fp32 backward config sweeps at prefill ==")
        bf_cfgs = [(32, 32, True, 1), (32, 16, True, 1), (64, 16, True, 1)]  # larger unrolls: minutes in ptxas
        for key, row in [("prefill_step_bf16", False), ("prefill_row_bf16", True)]:
            res = sweep(PRE, C, row, torch.bfloat16, bf_cfgs)
            report["sweep"][key] = [dict(us=ms * 1e3, cfg=str(cfg), TBs=tbs, identical=same) for ms, cfg, tbs, same in res]
            if res:
                log(f"  best {key}: {res[0][1]} {res[0][0] * 1e3:.1f} us {res[0][2]:.2f} TB/s")
        for key, row in [("prefill_bwd_step", False), ("prefill_bwd_row", True)]:
            res = sweep_bwd(PRE, C, row, plif_triton.BWD_CONFIGS + [(32, 4, False, 1)])
            report["sweep"][key] = [dict(us=ms * 1e3, cfg=str(cfg), TBs=tbs, identical=same) for ms, cfg, tbs, same in res]
            log(f"  best {key}: {res[0][1]} {res[0][0] * 1e3:.1f} us {res[0][2]:.2f} TB/s")

    log("== main table (default configs; at prefill also config='autotune', the run-time tuner) ==")
    results = []
    for name, S, row, dtype, steps in [
        ("prefill", PRE, False, torch.float32, 512), ("decode", DEC, False, torch.float32, DEC),
        ("prefill-row", PRE, True, torch.float32, 512), ("decode-row", DEC, True, torch.float32, DEC),
        ("prefill-bf16", PRE, False, torch.bfloat16, 512), ("prefill-row-bf16", PRE, True, torch.bfloat16, 512),
        ("decode-bf16", DEC, False, torch.bfloat16, DEC),
    ]:
        one_case(name, S, C, row, dtype, steps, results)
    report["forward"] = results
    bres = []
    for name, S, row in [("prefill", PRE, False), ("prefill-row", PRE, True), ("decode", DEC, False)]:
        bwd_case(name, S, C, row, bres)
    report["backward"] = bres

    log("== GPU correctness of the public API (compiled kernels vs torch path vs autograd loop), S=300 C=1000 ==")
    report["check"] = gpu_check()

    log("")
    log("== summary ==")
    log(f"{'case':18s} {'ours v-only':>12s} {'TB/s':>6s} {'ours s+v':>10s} {'TB/s':>6s} {'upstream':>10s} {'TB/s':>6s}"
        f" {'torch loop':>12s} {'up/ours':>8s} {'loop/ours':>9s} {'max|dv|':>8s}")
    for r in results:
        log(f"{r['name']:18s} {r['ours_inf_us']:10.1f}us {r['ours_inf_TBs']:6.2f} {r['ours_full_us']:8.1f}us "
            f"{r['ours_full_TBs']:6.2f} {r['upstream_us']:8.1f}us {r['upstream_TBs']:6.2f} "
            f"{r['torch_loop_us']:10.0f}us{'*' if r['torch_loop_extrapolated'] else ' '} "
            f"{r['speedup_inf_vs_upstream']:7.2f}x {r['speedup_inf_vs_torch']:8.0f}x "
            f"{max(r['max_dv_vs_loop_prefix'], r['max_dv_vs_loop_colslice_allS']):8.2g}")
    log("* torch loop timed on the first 512 steps and extrapolated linearly to 8192")
    for r in bres:
        log(f"backward {r['name']:12s} {r['bwd_us']:10.1f}us {r['bwd_TBs']:6.2f} TB/s")
    log(f"GPU checks: {sum(c['ok'] for c in report['check'])}/{len(report['check'])} OK;"
        f" wall {time.time() - t0:.0f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_plif_scan.json").write_text(json.dumps(report, indent=1))
        (Path(args.out) / "bench_plif_scan.log").write_text("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
