"""Per-row (per-output-channel) weight scales folded into the neuron (docs/fixed_point.md §2.1).

- the emulator vs an independent Python-int transcription of §2 + §2.1 + §3 with nonzero RS
  (including a port fed by two groups);
- the Lava fixed_pt neuron models with RS vs the doc, and a hand-built graph with RS on Lava
  (fused and per-population) vs the emulator;
- the quantizer: RS within [0, 7], the int32 bounds of §2.1 hold (checked here from the mantissas),
  weight error ≤ the per-tensor error, fidelity vs fp32 on the fixture, `--no-per-channel`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import need_lava
from test_emulator_int import _mini_graph, dec, dense, sat, sh, sig, softplus, wrap32

from ns_compile.sim import Emulator

RS_PORTS = {"b": ("I", "XB", "XA", "XT"), "r": ("R", "G", "Q"), "g1": ("I",), "u1": ("I",), "o": ("A",)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_rs(g, seed):
    rng = np.random.default_rng(seed)
    for pop, ports in RS_PORTS.items():
        p = g.populations[pop]
        for port in ports:
            r = rng.integers(0, 8, size=p.size).astype(np.uint8)
            r[0] = 7 if p.size > 1 else r[0]
            p.params[f"RS_{port}"] = r
    return g


# ---- reference from the doc (Python ints) -----------------------------------------------------------
def _port(g, pop, port, pays):
    """§2.1: X_i = sat_24((Σ_groups A'_i) >> r_i) — the exact sum of every group's §2 output."""
    P = g.populations[pop]
    groups = [s for s in g.synapses.values() if s.dst == pop and s.dst_port == port]
    tot = [0] * P.size
    for s in groups:
        a = dense(s.weight, pays[s.src], s.fmt)
        tot = [x + y for x, y in zip(tot, a)]
    r = P.params.get(f"RS_{port}", np.zeros(P.size, dtype=np.int64))
    return [sat(x >> int(ri), 24) for x, ri in zip(tot, r)]


def _ref_stage(g, stage, drive, V):
    st = g.stage(stage)
    K = st.frames
    V = {k: list(v) for k, v in V.items()}
    trace = {p: {"V": [], "P": []} for p in st.populations}
    for k in range(K):
        pays = {}
        for name in st.populations:
            p = g.populations[name]
            f = p.fmt
            if p.kind == "plif_static":
                I = [sat(x, 24) for x in drive] if name in st.drive_targets else _port(g, name, "I", pays)
                Vn, Pn = [], []
                for j in range(p.size):
                    vpre = sat(dec(V[name][j], int(p.params["B"][j])) + I[j], 24)
                    th = int(p.params["TH"][j])
                    v = sat(vpre - (th if vpre >= th else 0), 24)
                    Vn.append(v)
                    Pn.append(sat(sh(v, f["V"], f["P"]), f["payload_bits"]))
            elif p.kind == "plif_selective":
                X = {q: _port(g, name, q, pays) for q in ("I", "XB", "XA", "XT")}
                Vn, Pn = [], []
                for j in range(p.size):
                    xb = sat(X["XB"][j] + int(p.params["BB"][j]), 24)
                    xa = sat(X["XA"][j] + int(p.params["BA"][j]), 24)
                    xt = sat(X["XT"][j] + int(p.params["BT"][j]), 24)
                    Bt, At = sig(xb, f["XB"]), softplus(xa, f["XA"])
                    Tt = sat(int(p.params["VTHMIN"][0]) + sh(abs(xt), f["XT"], f["V"]), 24)
                    U = sat(sh(At * X["I"][j], 12 + f["I"], f["V"]), 24)
                    vpre = sat(dec(V[name][j], Bt) + U, 24)
                    v = sat(vpre - (Tt if vpre >= Tt else 0), 24)
                    Vn.append(v)
                    Pn.append(sat(sh(v, f["V"], f["P"]), f["payload_bits"]))
            elif p.kind == "gated_readout":
                R, G, Q = (_port(g, name, q, pays) for q in ("R", "G", "Q"))
                Vn = None
                Pn = [sat(sh(R[j] * sig(G[j], f["G"]), f["R"] + 12, f["F"]) + sh(Q[j], f["Q"], f["F"]), 24)
                      for j in range(p.size)]
            elif p.kind == "product":
                d = {x.dst_port: x.src for x in g.directs_into(name)}
                Vn = None
                Pn = [wrap32(a * b) >> int(f["exp"]) for a, b in zip(pays[d["X1"]], pays[d["X2"]])]
            else:                                   # accumulate
                Vn = None
                Pn = _port(g, name, "A", pays)
            pays[name] = Pn
            if Vn is not None:
                V[name] = Vn
                trace[name]["V"].append(Vn)
            trace[name]["P"].append(Pn)
    return trace, V


@pytest.mark.parametrize("seed", [0, 1])
def test_emulator_row_shifts_match_doc(seed):
    g = _with_rs(_mini_graph(seed), 50 + seed)
    emu = Emulator(g)
    rng = np.random.default_rng(200 + seed)
    state = emu.new_state(1)
    Vref = {k: [0] * v.shape[1] for k, v in state.V.items()}
    shifted_any = False
    for token in range(3):
        drives = {"s": [int(x) for x in rng.integers(-3000, 3000, size=3)],
                  "t": [int(x) for x in rng.integers(-2 ** 14, 2 ** 14, size=4)]}
        if token == 2:
            drives["s"][0] = 2 ** 23 + 5
        for stage in ("s", "t"):
            _, state, tr = emu.run_stage(stage, torch.tensor([drives[stage]]), state, trace=True)
            want, Vend = _ref_stage(g, stage, drives[stage], Vref)
            for pop, d in want.items():
                for key, frames in d.items():
                    if frames:
                        assert tr[pop][key][:, 0].tolist() == frames, (token, stage, pop, key)
            Vref.update(Vend)
            assert {k: v[0].tolist() for k, v in state.V.items() if k in Vend} == {k: Vend[k] for k in Vend}
    # RS really changes the integers: the same graph without RS differs somewhere
    g0 = _mini_graph(seed)
    e0 = Emulator(g0)
    s0 = e0.new_state(1)
    s1 = emu.new_state(1)
    d = torch.tensor([[2000, -1500, 900]])
    a = e0.run_stage("s", d, s0, trace=True)[2]
    b = emu.run_stage("s", d, s1, trace=True)[2]
    shifted_any = any(not torch.equal(a[p]["P"], b[p]["P"]) for p in a)
    assert shifted_any


# ---- Lava neurons ----------------------------------------------------------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("kind", ["plif_static", "plif_selective", "gated_readout", "accumulate"])
def test_lava_neuron_row_shift_matches_doc(kind):
    need_lava()
    from test_lava_graphs import doc_luts
    from test_lava_neurons import CASES, T, _inputs, _lava_run, _params, _split, ref_run
    rng = np.random.default_rng(31 + len(kind))
    n = 7
    ports, fmt = CASES[kind]
    inputs = _inputs(rng, ports, n, kind)
    params = _params(rng, kind, n)
    rshift = {p: rng.integers(0, 8, size=n).astype(np.int64) for p in ports}
    luts = doc_luts()
    early = {ports[-1]: 2} if kind in ("gated_readout", "plif_selective") else None
    # §2.1: the port value is (what arrives) >> r_i, then the usual rules; one input per port, so
    # shifting before or after the delay buffer is the same thing
    shifted = {p: [[int(v) >> int(rshift[p][i]) for i, v in enumerate(row)] for row in a] for p, a in inputs.items()}
    want = ref_run(kind, n, params, fmt, {p: np.array(a, dtype=object) for p, a in shifted.items()}, luts, early)
    rows = _lava_run(kind, n, params, fmt, inputs, luts, True, early, rshift=rshift)
    stateful = kind in ("plif_static", "plif_selective")
    got = _split(rows, n, stateful)
    assert len(got) == T
    for t, ((gv, go), (wv, wo)) in enumerate(zip(got, want)):
        assert np.array_equal(go.astype(np.int64), np.array(wo, dtype=np.int64)), (kind, t, go, wo)
        if stateful:
            assert np.array_equal(gv.astype(np.int64), np.array(wv, dtype=np.int64)), (kind, t)
    unshifted = ref_run(kind, n, params, fmt, inputs, luts, early)
    assert any(np.any(np.array(a[1]) != np.array(b[1])) for a, b in zip(want, unshifted))


@pytest.mark.lava
def test_lava_graph_with_row_shifts_equals_emulator():
    """Both granularities, a NeuronSpark-shaped graph with RS on every synapse-fed port (the FFN
    output port is fed by two groups, one through the delay buffer)."""
    need_lava()
    from test_lava_graphs import tiny_ns_graph
    from test_lava_run import PROMPT, _assert_same_trace, _emulator

    from ns_compile.backends.lava import run_artifact
    from ns_compile.quant.per_channel import PER_CHANNEL_KINDS
    g = tiny_ns_graph(seed=1)
    rng = np.random.default_rng(9)
    driven = {t for st in g.stages for t in st.drive_targets}
    n_rs = 0
    for s in g.synapses.values():
        p = g.populations[s.dst]
        if p.kind in PER_CHANNEL_KINDS and not (s.dst in driven and s.dst_port == "I"):
            p.params.setdefault(f"RS_{s.dst_port}", rng.integers(0, 4, size=p.size).astype(np.uint8))
            n_rs += 1
    assert n_rs >= 8
    out = {gr: run_artifact(g, PROMPT, granularity=gr, max_new_tokens=2, trace=True, timeout_s=120)
           for gr in ("fused", "population")}
    ids = PROMPT + out["fused"]["ids"][:-1]
    emu_tr, emu_lg = _emulator(g, ids)
    for gr in ("fused", "population"):
        _assert_same_trace(out[gr]["trace"], emu_tr)
        assert out[gr]["ids"] == out["fused"]["ids"]
    assert np.array_equal(out["fused"]["logits"], np.stack(emu_lg).astype(np.float32))


# ---- quantizer ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pc():
    from conftest import need_fixture

    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.quant import quantize
    from ns_compile.quant.calibrate import DEFAULT_TEXT
    d = need_fixture("neuronspark-tiny")
    h = load_model(d / "checkpoint")
    g = lower_handle(h)
    ids = torch.tensor(json.loads((d / "input_ids.json").read_text()))
    ref = np.load(d / "logits_exact.npy")
    cal = torch.tensor([h.encode_prompt(DEFAULT_TEXT)])
    on = quantize(g, cal, weight_bits=8)
    off = quantize(g, cal, weight_bits=8, per_channel=False)
    return g, on, off, ids, ref


def test_row_shifts_respect_the_bounds(tiny_pc):
    g, (qg, rep), (q0, _), _, _ = tiny_pc
    assert qg.meta["per_channel"] is True and q0.meta["per_channel"] is False
    assert not any(k.startswith("RS_") for p in q0.populations.values() for k in p.params)
    n_pos = 0
    for pname, p in qg.populations.items():
        for key, r in p.params.items():
            if not key.startswith("RS_"):
                continue
            port = key[3:]
            r = np.asarray(r, dtype=np.int64)
            assert r.shape == (p.size,) and r.min() >= 0 and r.max() <= 7
            n_pos += int((r > 0).sum())
            groups = [s for s in qg.synapses.values() if s.dst == pname and s.dst_port == port]
            assert groups
            psum = np.zeros(p.size)
            for s in groups:
                f = s.fmt
                M = np.asarray(s.weight, dtype=np.int64)
                # mantissas are qm(w, f_W + r_i, b) of the float weights (§2.1)
                w = np.asarray(g.synapses[s.name].weight, dtype=np.float64)
                want = np.clip(np.floor(w * 2.0 ** (f["f_W"] + r[:, None]) + 0.5), -128, 127)
                assert np.array_equal(M, want.astype(np.int64)), s.name
                smax = (1 << (qg.populations[s.src].fmt["payload_bits"] - 1)) - 1
                acc = np.abs(M).sum(1) * smax * 2 ** (9 - f["bits"])
                we = s.weight_exp()
                assert np.all((acc <= 2 ** 31 - 1) | (r == 0)), s.name
                if we > 0:
                    assert np.all((acc * 2 ** we <= 2 ** 31 - 1) | (r == 0)), s.name
                psum += acc * 2.0 ** we
            assert np.all((psum <= 2 ** 31 - 1 + len(groups)) | (r == 0)), pname
            # a port the host drives has no RS
            assert not any(pname in st.drive_targets and port == "I" for st in qg.stages)
    assert n_pos > 100                                   # per-channel is really used on the fixture
    for name, e in rep["synapses"].items():
        single = sum(1 for s in qg.synapses.values()
                     if (s.dst, s.dst_port) == (qg.synapses[name].dst, qg.synapses[name].dst_port)) == 1
        if single:
            assert e["err_rms"] <= e["per_tensor"]["err_rms"] * (1 + 1e-12), name
        assert {"mean", "max", "rows_shifted"} <= set(e["row_shift"])
    s = rep["per_channel_summary"]
    assert s["weight_err_rms"] < s["weight_err_rms_per_tensor"]
    from ns_compile.quant import format_report
    assert "per-channel weight scales" in format_report(rep)
    json.dumps(rep)


def _fidelity(qg, ids, ref):
    out = Emulator(qg).forward(ids).numpy().astype(np.float64)
    top1 = float((out.argmax(-1) == ref.argmax(-1)).mean())
    lp = torch.log_softmax(torch.tensor(ref, dtype=torch.float64), -1)
    lq = torch.log_softmax(torch.tensor(out), -1)
    kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
    return top1, kl


def test_per_channel_fidelity_vs_fp32(tiny_pc):
    _, (qg, rep), (q0, rep0), ids, ref = tiny_pc
    t1, kl1 = _fidelity(qg, ids, ref)
    t0, kl0 = _fidelity(q0, ids, ref)
    s = rep["per_channel_summary"]
    print(f"fixture vs fp32: per-channel top-1 {t1:.4f} KL {kl1:.3e} weight RMS {s['weight_err_rms']:.4e}; "
          f"per-tensor top-1 {t0:.4f} KL {kl0:.3e} weight RMS {s['weight_err_rms_per_tensor']:.4e}")
    assert t1 >= t0 and kl1 <= kl0


def test_compile_no_per_channel(tmp_path, capsys):
    from conftest import need_fixture
    from _ns_helpers import run_cli

    from ns_compile.artifact import load_artifact
    ckpt = need_fixture("neuronspark-tiny", "checkpoint")
    out = tmp_path / "off.nsc"
    code, stdout, err = run_cli(capsys, "compile", ckpt, "-o", out, "--no-per-channel", "--no-float")
    assert code == 0, err
    assert "per-channel weight scales: off" in stdout
    g, m = load_artifact(out)
    assert m["options"]["per_channel"] is False and g.meta["per_channel"] is False
    assert not any(k.startswith("RS_") for p in g.populations.values() for k in p.params)
