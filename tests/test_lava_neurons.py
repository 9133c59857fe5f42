"""Every Lava neuron model against an independent implementation of docs/fixed_point.md §3.

The reference below is written from the doc text with Python integers, element by element (it
shares no code with ns_compile.backends.lava.arith). Each model runs in Lava fed by Injectors on
random port inputs (including values beyond 24 bits, so saturation is exercised), on a schedule
with inactive steps (period 4, offset 1, 3 frames) and with an early port buffered by the neuron;
the trace (V, out) is compared at every step.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from conftest import need_lava
from test_lava_graphs import doc_luts

pytestmark = pytest.mark.lava

PERIOD, OFFSET, FRAMES, T = 4, 1, 3, 14


# ---- reference, from the doc, Python ints -------------------------------------------------------
def r_sat(x, n=24):
    m = (1 << (n - 1)) - 1
    return max(-m, min(m, x))


def r_shift(x, a, b):
    return x << (b - a) if b >= a else x >> (a - b)          # Python >> floors, as the doc's >>


def r_decay(v, b):
    s = (v > 0) - (v < 0)
    return s * ((abs(v) * b) >> 12)


def r_lut_index(x, f):
    return max(0, min(4095, r_shift(x, f, 8) + 2048))


def r_sigmoid(x, f, tab):
    return int(tab[r_lut_index(x, f)])


def r_softplus(x, f, tab):
    if r_shift(x, f, 8) >= 2048:
        return r_shift(x, f, 12)
    return int(tab[r_lut_index(x, f)])


def r_wrap32(x):
    return ((x + 2 ** 31) % 2 ** 32) - 2 ** 31


def ref_run(kind, n, params, fmt, inputs, luts, early=None):
    """inputs: port -> [T, n] ints (what arrives at the port each step). Returns [T] of (V, out)."""
    early = early or {}
    V = [0] * n
    hist = {p: [] for p in inputs}
    rows = []
    for t in range(1, T + 1):
        k = (t - 1 - OFFSET) % PERIOD
        x = {}
        for p, arr in inputs.items():
            hist[p].append([int(v) for v in arr[t - 1]])
            d = early.get(p, 0)
            x[p] = hist[p][t - 1 - d] if t - 1 - d >= 0 else [0] * n
        out = [0] * n
        if k < FRAMES:
            for i in range(n):
                if kind == "plif_static":
                    vpre = r_sat(r_decay(V[i], int(params["B"][i])) + r_sat(x["I"][i]))
                    th = int(params["TH"][i])
                    V[i] = r_sat(vpre - (th if vpre >= th else 0))
                    out[i] = r_sat(r_shift(V[i], fmt["V"], fmt["P"]), fmt.get("payload_bits", 16))
                elif kind == "plif_selective":
                    xb = r_sat(r_sat(x["XB"][i]) + int(params["BB"][i]))
                    Bt = r_sigmoid(xb, fmt["XB"], luts["sigmoid"])
                    xa = r_sat(r_sat(x["XA"][i]) + int(params["BA"][i]))
                    At = r_softplus(xa, fmt["XA"], luts["softplus"])
                    xt = r_sat(r_sat(x["XT"][i]) + int(params["BT"][i]))
                    Tt = r_sat(int(params["VTHMIN"][0]) + r_shift(abs(xt), fmt["XT"], fmt["V"]))
                    U = r_sat(r_shift(At * r_sat(x["I"][i]), 12 + fmt["I"], fmt["V"]))
                    vpre = r_sat(r_decay(V[i], Bt) + U)
                    V[i] = r_sat(vpre - (Tt if vpre >= Tt else 0))
                    out[i] = r_sat(r_shift(V[i], fmt["V"], fmt["P"]), fmt.get("payload_bits", 16))
                elif kind == "gated_readout":
                    g = r_sigmoid(r_sat(x["G"][i]), fmt["G"], luts["sigmoid"])
                    out[i] = r_sat(r_shift(r_sat(x["R"][i]) * g, fmt["R"] + 12, fmt["F"])
                                   + r_shift(r_sat(x["Q"][i]), fmt["Q"], fmt["F"]))
                elif kind == "accumulate":
                    out[i] = r_sat(x["A"][i])
        if kind == "product":                      # stock ProdNeuron: every step, no schedule
            out = [r_wrap32(x["X1"][i] * x["X2"][i]) >> fmt["exp"] for i in range(n)]
        rows.append((list(V), out))
    return rows


def ref_run_float(kind, n, params, inputs):
    V = np.zeros(n)
    rows = []
    for t in range(1, T + 1):
        k = (t - 1 - OFFSET) % PERIOD
        x = {p: a[t - 1] for p, a in inputs.items()}
        out = np.zeros(n)
        if k < FRAMES:
            if kind == "plif_static":
                vpre = params["B"] * V + x["I"]
                V = vpre - np.where(vpre >= params["TH"], params["TH"], 0)
                out = V.copy()
            elif kind == "plif_selective":
                beta = 1 / (1 + np.exp(-(x["XB"] + params["BB"])))
                z = x["XA"] + params["BA"]
                alpha = np.log1p(np.exp(z))
                th = params["VTHMIN"][0] + np.abs(x["XT"] + params["BT"])
                vpre = beta * V + alpha * x["I"]
                V = vpre - np.where(vpre >= th, th, 0)
                out = V.copy()
            elif kind == "gated_readout":
                out = x["R"] / (1 + np.exp(-x["G"])) + x["Q"]
            elif kind == "accumulate":
                out = x["A"].copy()
        rows.append((V.copy(), out))
    return rows


# ---- Lava harness ------------------------------------------------------------------------------
def _lava_run(kind, n, params, fmt, inputs, luts, fixed, early=None, rshift=None):
    """One neuron Process fed by one Injector per port; returns [T] traces (V?, out).
    rshift: {port: r} per-neuron port shifts (docs/fixed_point.md §2.1)."""
    def fn():
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
        from lava.proc.io.injector import Injector, PyLoihiInjectorModel
        from lava.proc.prodneuron.models import PyProdNeuronModelFixed
        from lava.proc.prodneuron.process import ProdNeuron

        from ns_compile.backends.lava import models as M
        from ns_compile.backends.lava.processes import NEURON_PROCESSES
        mm = {}
        if kind == "product":
            proc = ProdNeuron(shape=(n,), vth=0, exp=fmt["exp"] if fixed else 0)
            mm[proc] = PyProdNeuronModelFixed if fixed else M.PyProdNeuronFloat
            ports = {}
            for p, dst in (("X1", proc.a_in1), ("X2", proc.a_in2)):
                # the Injector sends floats; in a graph ProdNeuron gets int32 payloads: convert
                # through an always-active accumulate (tested above), out = sat_24(A)
                conv = NEURON_PROCESSES["accumulate"](shape=(n,), fmt={"A": 0, "F": 0})
                mm[conv] = M.POP_MODELS[("accumulate", fixed)]
                conv.s_out.connect(dst)
                ports[p] = conv.A
            tr = proc.s_out
            width = n
        else:
            proc = NEURON_PROCESSES[kind](shape=(n,), params=params, fmt=fmt, luts=luts, period=PERIOD,
                                          offset=OFFSET, frames=FRAMES, early=early or {},
                                          **({"rshift": rshift} if rshift else {}))
            mm[proc] = M.POP_MODELS[(kind, fixed)]
            ports = {p: getattr(proc, p + ("_e" if (early or {}).get(p) else "")) for p in inputs}
            tr = proc.trace
            width = proc.trace.shape[0]
        injs = {}
        for p, port in ports.items():
            inj = Injector(shape=(n,), buffer_size=T + 2)
            mm[inj] = PyLoihiInjectorModel
            inj.out_port.connect(port)
            injs[p] = inj
        ext = Extractor(shape=(width,), buffer_size=T + 2)
        mm[ext] = PyLoihiExtractorModel
        tr.connect(ext.in_port)
        cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt", exception_proc_model_map=mm)
        proc.run(condition=RunSteps(num_steps=T, blocking=False), run_cfg=cfg)
        for t in range(T):
            for p, inj in injs.items():
                inj.send(np.asarray(inputs[p][t], dtype=np.float64))
        from ns_compile.backends.lava.runner import _Failed, _LogCapture, _recv
        end = time.monotonic() + 60
        try:
            rows = [_recv(ext, proc.runtime, _LogCapture(), end) for _ in range(T)]
        except _Failed as e:
            raise RuntimeError(str(e)) from None
        proc.wait()
        proc.stop()
        return rows

    from ns_compile.backends.lava.runner import _run_isolated
    rows = _run_isolated(fn, (), 90)
    assert len(rows) == T
    return rows


def _split(rows, n, stateful):
    if stateful:
        return [(r[:n], r[n:]) for r in rows]
    return [(None, r) for r in rows]


CASES = {
    "plif_static": (("I",), {"V": 12, "P": 8, "payload_bits": 16}),
    "plif_selective": (("I", "XB", "XA", "XT"), {"I": 11, "XB": 10, "XA": 9, "XT": 10, "V": 12, "P": 9,
                                                   "payload_bits": 16}),
    "gated_readout": (("R", "G", "Q"), {"R": 10, "G": 9, "Q": 11, "F": 10}),
    "accumulate": (("A",), {"A": 10, "F": 10}),
    "product": (("X1", "X2"), {"exp": 13}),
}


def _inputs(rng, ports, n, kind):
    out = {}
    for p in ports:
        if kind == "product":
            a = rng.integers(-(2 ** 14) + 1, 2 ** 14, size=(T, n))
        else:
            a = rng.integers(-(2 ** 14), 2 ** 14, size=(T, n)) * rng.choice([1, 16, 700], size=(T, n))
        out[p] = a.astype(np.int64)
    return out


def _params(rng, kind, n):
    if kind == "plif_static":
        return {"B": rng.integers(0, 4097, n), "TH": rng.integers(-3000, 20000, n)}
    if kind == "plif_selective":
        return {"BB": rng.integers(-3000, 3000, n), "BA": rng.integers(-3000, 3000, n),
                "BT": rng.integers(-3000, 3000, n), "VTHMIN": np.array([410])}
    return {}


@pytest.mark.parametrize("kind", list(CASES))
def test_fixed_model_matches_doc(kind):
    need_lava()
    rng = np.random.default_rng(hash(kind) % 1000)
    n = 7
    ports, fmt = CASES[kind]
    inputs = _inputs(rng, ports, n, kind)
    params = _params(rng, kind, n)
    luts = doc_luts()
    early = {ports[-1]: 2} if kind in ("gated_readout", "plif_selective") else None
    want = ref_run(kind, n, params, fmt, inputs, luts, early)
    rows = _lava_run(kind, n, params, fmt, inputs, luts, True, early)
    stateful = kind in ("plif_static", "plif_selective")
    got = _split(rows, n, stateful)
    for t, ((gv, go), (wv, wo)) in enumerate(zip(got, want)):
        assert np.array_equal(go.astype(np.int64), np.array(wo)), (kind, t, go, wo)
        if stateful:
            assert np.array_equal(gv.astype(np.int64), np.array(wv)), (kind, t, gv, wv)
    # the run must not be trivial: some payloads non-zero, and (stateful) states change
    assert any(np.any(np.array(w[1]) != 0) for w in want)


@pytest.mark.parametrize("kind", ["plif_static", "plif_selective", "gated_readout", "accumulate", "product"])
def test_float_model_matches_float_dynamics(kind):
    need_lava()
    rng = np.random.default_rng(7)
    n = 5
    ports, _ = CASES[kind]
    inputs = {p: rng.normal(0, 1.5, size=(T, n)) for p in ports}
    if kind == "plif_static":
        params = {"B": rng.uniform(0.3, 0.95, n), "TH": rng.uniform(0.2, 1.5, n)}
    elif kind == "plif_selective":
        params = {"BB": rng.normal(0, 1, n), "BA": rng.normal(0, 1, n), "BT": rng.normal(0, 1, n),
                  "VTHMIN": np.array([0.1])}
    else:
        params = {}
    rows = _lava_run(kind, n, params, {}, inputs, None, False)
    if kind == "product":
        for t in range(T):
            assert np.allclose(rows[t], inputs["X1"][t] * inputs["X2"][t], rtol=1e-12, atol=1e-12)
        return
    want = ref_run_float(kind, n, params, inputs)
    got = _split(rows, n, kind in ("plif_static", "plif_selective"))
    for (gv, go), (wv, wo) in zip(got, want):
        assert np.allclose(go, wo, rtol=1e-12, atol=1e-12)
        if gv is not None:
            assert np.allclose(gv, wv, rtol=1e-12, atol=1e-12)
    assert math.isfinite(float(np.abs(got[-1][1]).sum()))
