"""PLIF scan kernels: the Triton kernels (through Triton's interpreter on CPU) and the PyTorch path.

Expected values come from a second implementation, never from the code under test:
  - forward: `plif_scan_torch`, the plain sequential loop (spikes identical, |dv_post| <= 1e-6);
  - backward: torch autograd through an explicit loop whose Heaviside has a sigmoid-surrogate backward
    (`_ref_loop` below), not the hand-written adjoints (Triton or torch) under test.

The Triton checks run in ONE subprocess that executes this file as a script with TRITON_INTERPRET=1 in its
environment from the start, so the result does not depend on what the rest of the suite imported (triton,
torch, the kernels) or in which order. The subprocess prints one JSON line; each case is a separate test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
ALPHA = 4.0
GRAD_TOL = 1e-5  # max |grad - ref| / max(1, max |ref|), per tensor
FWD_TOL = 1e-6


# ------------------------------------------------------------------------------------------------
# independent reference: autograd through the explicit loop
# ------------------------------------------------------------------------------------------------
class _SigmoidHeaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(ctx.alpha * x)
        return g * ctx.alpha * sg * (1 - sg), None


def _ref_loop(beta, u, theta, v0, row_param, detach_reset):
    """fp32 autograd reference. beta/theta (S, C) or (C,) with row_param."""
    v = v0.float()
    spikes, vs = [], []
    for k in range(u.shape[0]):
        b = beta.float() if row_param else beta[k].float()
        th = theta.float() if row_param else theta[k].float()
        v_pre = b * v + u[k].float()
        s = _SigmoidHeaviside.apply(v_pre - th, ALPHA)
        v = v_pre - th * (s.detach() if detach_reset else s)
        spikes.append(s)
        vs.append(v)
    return torch.stack(spikes), torch.stack(vs)


def _inputs(S, C, row_param, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shape = (C,) if row_param else (S, C)
    beta = torch.sigmoid(torch.randn(shape, generator=g) + 1.5)
    theta = 0.1 + 0.4 * torch.rand(shape, generator=g)
    u = (0.6 * torch.randn(S, C, generator=g)).to(dtype)
    v0 = 0.2 * torch.randn(C, generator=g)
    ws = torch.randn(S, C, generator=g)
    wv = torch.randn(S, C, generator=g)
    return beta, u, theta, v0, ws, wv


def _grad_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _grads(fn, beta, u, theta, v0, ws, wv, return_spike, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (beta, u, theta, v0)]
    s, v = fn(*leaves, return_spike=return_spike, **kw)
    loss = (v.float() * wv).sum()
    if return_spike:
        loss = loss + (s.float() * ws).sum()
    loss.backward()
    return [t.grad for t in leaves]


def _ref_grads(beta, u, theta, v0, ws, wv, row_param, detach_reset, return_spike):
    leaves = [t.detach().clone().requires_grad_() for t in (beta, u, theta, v0)]
    s, v = _ref_loop(*leaves, row_param=row_param, detach_reset=detach_reset)
    # outputs in u's dtype, as the API returns them: autograd then rounds the output grads the same way
    s, v = s.to(u.dtype), v.to(u.dtype)
    loss = (v.float() * wv).sum()
    if return_spike:
        loss = loss + (s.float() * ws).sum()
    loss.backward()
    return [t.grad for t in leaves]


BF16_STEP = 2.0 ** -7  # one bf16 rounding step, relative


def _check_backward(backend, S, C, row_param, detach_reset, return_spike, seed, bwd_config=None,
                    dtype=torch.float32):
    """Max relative grad error over the fp32 leaves; with a bf16 u its gradient (bf16) is returned apart."""
    from ns_compile.kernels import plif_scan, plif_scan_rowparam

    fn = plif_scan_rowparam if row_param else plif_scan
    beta, u, theta, v0, ws, wv = _inputs(S, C, row_param, seed, dtype)
    got = _grads(fn, beta, u, theta, v0, ws, wv, return_spike, backend=backend, detach_reset=detach_reset,
                 alpha=ALPHA, bwd_config=bwd_config)
    ref = _ref_grads(beta, u, theta, v0, ws, wv, row_param, detach_reset, return_spike)
    assert got[1].dtype == dtype
    if dtype == torch.float32:
        return max(_grad_err(a, b) for a, b in zip(got, ref)), 0.0
    return max(_grad_err(got[i], ref[i]) for i in (0, 2, 3)), _grad_err(got[1], ref[1])


def _check_forward(backend, S, C, row_param, dtype, return_spike, seed, fwd_config=None):
    """Returns (number of differing spikes, max |dv_post|, fraction of spiking entries)."""
    from ns_compile.kernels import plif_scan, plif_scan_rowparam
    from ns_compile.kernels.plif_torch import plif_scan_torch

    beta, u, theta, v0, _, _ = _inputs(S, C, row_param, seed, dtype)
    fn = plif_scan_rowparam if row_param else plif_scan
    s, v = fn(beta, u, theta, v0, backend=backend, return_spike=return_spike, fwd_config=fwd_config)
    rs, rv = plif_scan_torch(beta, u, theta, v0)
    assert v.dtype == dtype and v.shape == u.shape
    nbad = 0
    if return_spike:
        assert s.dtype == dtype
        nbad = int((s != rs).sum())
    else:
        assert s is None
    return nbad, float((v.float() - rv.float()).abs().max()), float(rs.float().mean())


# ------------------------------------------------------------------------------------------------
# the Triton cases (run in the interpreter subprocess)
# ------------------------------------------------------------------------------------------------
FWD_CFGS = [None, (32, 16, True, 1), (32, 8, False, 1), (64, 16, True, 2), (16, 4, True, 1)]


def _triton_cases():
    cases = []
    # forward: S not a multiple of UNROLL (37, 40 vs 16), C not a multiple of BLOCK_C (70, 33)
    for S, C in [(40, 70), (37, 33)]:
        for row in (False, True):
            for cfg in FWD_CFGS:
                cases.append(dict(kind="fwd", S=S, C=C, row=row, dtype="float32", spike=True, cfg=cfg))
    for row in (False, True):
        cases.append(dict(kind="fwd", S=37, C=70, row=row, dtype="bfloat16", spike=True, cfg=None))
        cases.append(dict(kind="fwd", S=21, C=70, row=row, dtype="float32", spike=False, cfg=None))
        cases.append(dict(kind="fwd", S=1, C=5, row=row, dtype="float32", spike=True, cfg=None))
    # backward: both variants, reset attached/detached, with and without the spike output
    for row in (False, True):
        for detach in (False, True):
            cases.append(dict(kind="bwd", S=37, C=70, row=row, detach=detach, spike=True, cfg=None))
        cases.append(dict(kind="bwd", S=40, C=33, row=row, detach=False, spike=False, cfg=(32, 8, False, 1)))
        cases.append(dict(kind="bwd", S=21, C=33, row=row, detach=False, spike=True, cfg=None, dtype="bfloat16"))
    return cases


def _case_name(c):
    parts = [c["kind"], "row" if c["row"] else "step", f"S{c['S']}", f"C{c['C']}"]
    if c["kind"] == "fwd":
        parts += [c["dtype"], "spk" if c["spike"] else "vonly"]
    else:
        parts += ["detach" if c["detach"] else "attached", "spk" if c["spike"] else "vonly", c.get("dtype", "float32")]
    if c["cfg"]:
        parts.append("cfg" + "-".join(str(int(x)) for x in c["cfg"]))
    return "_".join(parts)


def _run_triton_cases():
    from ns_compile.kernels.plif import select_backend

    out = {"_backend_cpu_auto": select_backend(torch.device("cpu"))}
    for i, c in enumerate(_triton_cases()):
        name = _case_name(c)
        try:
            if c["kind"] == "fwd":
                nbad, dv, rate = _check_forward("triton", c["S"], c["C"], c["row"], getattr(torch, c["dtype"]),
                                                c["spike"], seed=100 + i, fwd_config=c["cfg"])
                out[name] = {"spike_mismatch": nbad, "max_dv": dv, "spike_rate": rate}
            else:
                err, err_du = _check_backward("triton", c["S"], c["C"], c["row"], c["detach"], c["spike"],
                                              seed=100 + i, bwd_config=c["cfg"],
                                              dtype=getattr(torch, c.get("dtype", "float32")))
                out[name] = {"grad_err": err, "grad_err_bf16_du": err_du}
        except Exception as e:  # reported per case by the parent
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def _have_triton():
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def triton_results():
    if not _have_triton():
        pytest.skip("triton is not importable")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(HERE), "--triton-interpret-cases"], env=env, capture_output=True,
                          text=True, timeout=600, cwd=str(HERE.parents[1]))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"interpreter subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


def test_interpreter_dispatch_selects_triton(triton_results):
    assert triton_results["_backend_cpu_auto"] == "triton"


@pytest.mark.parametrize("case", _triton_cases(), ids=_case_name)
def test_triton_interpreted(case, triton_results):
    r = triton_results[_case_name(case)]
    assert "error" not in r, r.get("error")
    if case["kind"] == "fwd":
        assert r["spike_mismatch"] == 0
        assert r["max_dv"] <= FWD_TOL
        if case["S"] > 1:
            assert 0.02 < r["spike_rate"] < 0.98  # the inputs exercise both branches
    else:
        assert r["grad_err"] <= GRAD_TOL
        assert r["grad_err_bf16_du"] <= BF16_STEP


# ------------------------------------------------------------------------------------------------
# the PyTorch path (in process)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_path_forward_equals_loop(row, dtype):
    nbad, dv, rate = _check_forward("torch", 23, 19, row, dtype, True, seed=7)
    assert nbad == 0 and dv <= FWD_TOL and 0.02 < rate < 0.98
    nbad, dv, _ = _check_forward("torch", 23, 19, row, dtype, False, seed=8)
    assert dv <= FWD_TOL


@pytest.mark.parametrize("row", [False, True])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("spike", [True, False])
def test_torch_path_backward_matches_autograd_loop(row, detach, spike):
    err, _ = _check_backward("torch", 29, 21, row, detach, spike, seed=11)
    assert err <= GRAD_TOL


@pytest.mark.parametrize("row", [False, True])
def test_torch_path_backward_bf16_u(row):
    err, err_du = _check_backward("torch", 17, 13, row, False, True, seed=12, dtype=torch.bfloat16)
    assert err <= GRAD_TOL and err_du <= BF16_STEP


def test_grad_flows_through_default_dispatch_multidim():
    """(S, B, N) layout, v0 (B, N), row params broadcast from (N,): grads reach every input, finite."""
    from ns_compile.kernels import plif_scan, plif_scan_rowparam

    g = torch.Generator().manual_seed(3)
    S, B, N = 12, 2, 5
    beta = torch.sigmoid(torch.randn(S, B, N, generator=g)).requires_grad_()
    theta = (0.1 + 0.3 * torch.rand(S, B, N, generator=g)).requires_grad_()
    u = torch.randn(S, B, N, generator=g).requires_grad_()
    v0 = torch.zeros(B, N).requires_grad_()
    s, v = plif_scan(beta, u, theta, v0)
    assert s.shape == v.shape == (S, B, N)
    (v.sum() + s.sum()).backward()
    for t in (beta, theta, u, v0):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0

    br = torch.sigmoid(torch.randn(N, generator=g)).requires_grad_()
    tr = (0.1 + 0.3 * torch.rand(N, generator=g)).requires_grad_()
    u2 = torch.randn(S, B, N, generator=g).requires_grad_()
    s, v = plif_scan_rowparam(br, u2, tr, torch.zeros(B, N))
    (v.square().sum() + s.sum()).backward()
    assert br.grad.shape == (N,) and tr.grad.shape == (N,)
    for t in (br, tr, u2):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # the broadcast row gradient is the sum over the batch of the per-column gradient
    beta_full = br.detach().expand(B, N).clone().requires_grad_()
    s2, v2 = plif_scan_rowparam(beta_full, u2.detach(), tr.detach(), torch.zeros(B, N))
    (v2.square().sum() + s2.sum()).backward()
    torch.testing.assert_close(br.grad, beta_full.grad.sum(0), rtol=1e-6, atol=1e-6)


def test_no_grad_inference_mode_returns_none_spike():
    from ns_compile.kernels import plif_scan

    beta, u, theta, v0, _, _ = _inputs(9, 6, False, seed=5)
    with torch.no_grad():
        s, v = plif_scan(beta, u, theta, v0, return_spike=False, backend="torch")
    assert s is None and v.shape == u.shape


def test_bad_backend_rejected():
    from ns_compile.kernels import plif_scan

    beta, u, theta, v0, _, _ = _inputs(3, 4, False, seed=1)
    with pytest.raises(ValueError):
        plif_scan(beta, u, theta, v0, backend="cuda-magic")


if __name__ == "__main__" and "--triton-interpret-cases" in sys.argv:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    print("RESULTS " + json.dumps(_run_triton_cases()), flush=True)
