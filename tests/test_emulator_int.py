"""Integer emulator vs. an independent pure-Python transcription of docs/fixed_point.md.

The reference below is written from the document (Python ints, element loops); it does not call
the emulator's helpers. Graphs are built by hand with chosen fracs and random mantissas, driven
hard enough to hit the saturations.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ns_compile.ir import Direct, Graph, HostOp, Population, Stage, Synapse
from ns_compile.quant.luts import build_luts, lut_sigmoid, lut_softplus
from ns_compile.sim import Emulator, run_host_op

LUTS = build_luts()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the contract, transcribed (Python ints) ----------------------------------------------------

def sh(x, a, b):
    return x << (b - a) if b >= a else x >> (a - b)


def sat(x, n):
    m = 2 ** (n - 1) - 1
    return max(-m, min(m, x))


def wrap32(x):
    return ((x + 2 ** 31) % 2 ** 32) - 2 ** 31


def dec(v, b):
    s = (v > 0) - (v < 0)
    return s * ((abs(v) * b) >> 12)


def idx(x, f):
    return min(4095, max(0, sh(x, f, 8) + 2048))


def sig(x, f):
    return int(LUTS["sigmoid"][idx(x, f)])


def softplus(x, f):
    return sh(x, f, 12) if sh(x, f, 8) >= 2048 else int(LUTS["softplus"][idx(x, f)])


def dense(M, S, fmt):
    b = fmt["bits"]
    out = []
    for row in M:
        acc = sum(int(m) * int(s) for m, s in zip(row, S)) * 2 ** (9 - b)
        out.append(sh(wrap32(acc), fmt["f_W"] + fmt["f_S"] + 9 - b, fmt["f_A"]))
    return out


# ---- a hand-built quantized graph with every neuron type ------------------------------------------

def _mini_graph(seed=0):
    rng = np.random.default_rng(seed)
    g = Graph(family="test", config={"eps": 1e-6}, quantized=True)
    g.meta["luts"] = LUTS

    def M(n, m, b):
        return rng.integers(-(2 ** (b - 1)), 2 ** (b - 1), size=(n, m)).astype(np.int8)

    # stage s: a (plif_static) -> b (plif_selective) -> r (gated_readout)
    g.add_population(Population("a", "plif_static", 3, "s", {"B": np.array([3000, 4096, 100]),
                                                              "TH": np.array([1000, -200, 5000])}, 0,
                                {"V": 10, "I": 10, "P": 6, "payload_bits": 16}))
    g.add_population(Population("b", "plif_selective", 2, "s", {"BB": np.array([300, -900]), "BA": np.array([50, -2000]),
                                                                 "BT": np.array([-700, 400]), "VTHMIN": np.array([102])},
                                1, {"I": 12, "XB": 10, "XA": 9, "XT": 11, "V": 10, "P": 8, "payload_bits": 16}))
    g.add_population(Population("r", "gated_readout", 2, "s", {}, 2, {"R": 10, "G": 8, "Q": 9, "F": 11, "P": 11,
                                                                     "payload_bits": 24}))
    for name, port, b, fa in (("wi", "I", 8, 12), ("wb", "XB", 5, 10), ("wa", "XA", 8, 9), ("wt", "XT", 3, 11)):
        g.add_synapse(Synapse(name, "a", "b", port, M(2, 3, b), fmt={"bits": b, "f_W": 6, "f_S": 6, "f_A": fa}))
    g.add_synapse(Synapse("wr", "b", "r", "R", M(2, 2, 8), fmt={"bits": 8, "f_W": 7, "f_S": 8, "f_A": 10}))
    g.add_synapse(Synapse("wg", "a", "r", "G", M(2, 3, 6), fmt={"bits": 6, "f_W": 4, "f_S": 6, "f_A": 8}))
    g.add_synapse(Synapse("wq", "a", "r", "Q", M(2, 3, 8), fmt={"bits": 8, "f_W": 9, "f_S": 6, "f_A": 9}))
    g.stages.append(Stage("s", 5, "ds", ["a"], ["a", "b", "r"], "r", "ps"))
    # stage t: x -> g1, u1 (15-bit payloads) -> p (product) -> o (accumulate) <- x (skip)
    g.add_population(Population("x", "plif_static", 4, "t", {"B": np.array([2048, 4000, 0, 1234]),
                                                              "TH": np.array([3000, 500, 100000, 2])}, 0,
                                {"V": 12, "I": 12, "P": 10, "payload_bits": 16}))
    for nm in ("g1", "u1"):
        g.add_population(Population(nm, "plif_static", 3, "t", {"B": np.array([4000, 1000, 3500]),
                                                                 "TH": np.array([9000, 20000, 700])}, 1,
                                    {"V": 12, "I": 12, "P": 11, "payload_bits": 15}))
        g.add_synapse(Synapse(f"w{nm}", "x", nm, "I", M(3, 4, 8), fmt={"bits": 8, "f_W": 5, "f_S": 10, "f_A": 12}))
    g.add_population(Population("p", "product", 3, "t", {"exp": np.array([13])}, 1,
                                {"X1": 11, "X2": 11, "exp": 13, "P": 9, "payload_bits": 16}))
    g.directs += [Direct("g1", "p", "X1"), Direct("u1", "p", "X2")]
    g.add_population(Population("o", "accumulate", 2, "t", {}, 2, {"A": 9, "F": 9, "P": 9, "payload_bits": 24}))
    g.add_synapse(Synapse("wd", "p", "o", "A", M(2, 3, 8), fmt={"bits": 8, "f_W": 8, "f_S": 9, "f_A": 9}))
    g.add_synapse(Synapse("ws", "x", "o", "A", M(2, 4, 7), fmt={"bits": 7, "f_W": 6, "f_S": 10, "f_A": 9}))
    g.stages.append(Stage("t", 4, "dt", ["x"], ["x", "g1", "u1", "p", "o"], "o", "pt"))
    g.validate()
    return g


def _plif_static_ref(pop, I_frames, V):
    B, TH, f = pop.params["B"], pop.params["TH"], pop.fmt
    Vs, Ps = [], []
    for Ik in I_frames:
        Vn, Pn = [], []
        for j in range(pop.size):
            vpre = sat(dec(V[j], int(B[j])) + sat(Ik[j], 24), 24)
            s = vpre >= TH[j]
            v = sat(vpre - (int(TH[j]) if s else 0), 24)
            Vn.append(v)
            Pn.append(sat(sh(v, f["V"], f["P"]), f["payload_bits"]))
        V = Vn
        Vs.append(Vn)
        Ps.append(Pn)
    return Vs, Ps, V


def _ref_stage_s(g, drive, V):
    a, b, r = (g.populations[n] for n in "abr")
    Va, Pa, Va_end = _plif_static_ref(a, [drive] * 5, V["a"])
    syn = g.synapses
    f = b.fmt
    Vb = V["b"]
    Pb_all, Vb_all, out = [], [], []
    for k in range(5):
        ports = {p: dense(syn[n].weight, Pa[k], syn[n].fmt) for n, p in (("wi", "I"), ("wb", "XB"), ("wa", "XA"),
                                                                          ("wt", "XT"))}
        Vn, Pn = [], []
        for j in range(2):
            I = sat(ports["I"][j], 24)
            xb = sat(sat(ports["XB"][j], 24) + int(b.params["BB"][j]), 24)
            xa = sat(sat(ports["XA"][j], 24) + int(b.params["BA"][j]), 24)
            xt = sat(sat(ports["XT"][j], 24) + int(b.params["BT"][j]), 24)
            Bt, At = sig(xb, f["XB"]), softplus(xa, f["XA"])
            Tt = sat(int(b.params["VTHMIN"][0]) + sh(abs(xt), f["XT"], f["V"]), 24)
            U = sat(sh(At * I, 12 + f["I"], f["V"]), 24)
            vpre = sat(dec(Vb[j], Bt) + U, 24)
            v = sat(vpre - (Tt if vpre >= Tt else 0), 24)
            Vn.append(v)
            Pn.append(sat(sh(v, f["V"], f["P"]), 16))
        Vb = Vn
        Vb_all.append(Vn)
        Pb_all.append(Pn)
        R = dense(syn["wr"].weight, Pn, syn["wr"].fmt)
        G = dense(syn["wg"].weight, Pa[k], syn["wg"].fmt)
        Q = dense(syn["wq"].weight, Pa[k], syn["wq"].fmt)
        fr = r.fmt
        out.append([sat(sh(sat(R[j], 24) * sig(sat(G[j], 24), fr["G"]), fr["R"] + 12, fr["F"])
                        + sh(sat(Q[j], 24), fr["Q"], fr["F"]), 24) for j in range(2)])
    return out, {"a": Va_end, "b": Vb}, {"a": (Va, Pa), "b": (Vb_all, Pb_all)}


def _ref_stage_t(g, drive, V):
    P = g.populations
    syn = g.synapses
    Vx, Px, Vx_end = _plif_static_ref(P["x"], [drive] * 4, V["x"])
    Ig = [dense(syn["wg1"].weight, Px[k], syn["wg1"].fmt) for k in range(4)]
    Iu = [dense(syn["wu1"].weight, Px[k], syn["wu1"].fmt) for k in range(4)]
    _, Pg, Vg_end = _plif_static_ref(P["g1"], Ig, V["g1"])
    _, Pu, Vu_end = _plif_static_ref(P["u1"], Iu, V["u1"])
    out = []
    for k in range(4):
        prod = [wrap32(Pg[k][j] * Pu[k][j]) >> 13 for j in range(3)]
        A = [x + y for x, y in zip(dense(syn["wd"].weight, prod, syn["wd"].fmt),
                                   dense(syn["ws"].weight, Px[k], syn["ws"].fmt))]
        out.append([sat(x, 24) for x in A])
    return out, {"x": Vx_end, "g1": Vg_end, "u1": Vu_end}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stages_match_contract(seed):
    g = _mini_graph(seed)
    emu = Emulator(g)
    rng = np.random.default_rng(100 + seed)
    state = emu.new_state(1)
    Vref = {k: [0] * v.shape[1] for k, v in state.V.items()}
    for token in range(3):      # state carried across tokens
        # drives span small values to beyond 24 bits (saturation)
        ds = [int(x) for x in rng.integers(-3000, 3000, size=3)]
        if token == 2:
            ds[0] = 2 ** 23 + 5
        dt = [int(x) for x in rng.integers(-2 ** 14, 2 ** 14, size=4)]
        out_s, state, tr = emu.run_stage("s", torch.tensor([ds]), state, trace=True)
        ref_s, Vs_end, inner = _ref_stage_s(g, ds, Vref)
        assert out_s[:, 0].tolist() == ref_s
        assert tr["a"]["P"][:, 0].tolist() == inner["a"][1] and tr["b"]["V"][:, 0].tolist() == inner["b"][0]
        assert tr["b"]["P"][:, 0].tolist() == inner["b"][1]
        out_t, state = emu.run_stage("t", torch.tensor([dt]), state)
        ref_t, Vt_end = _ref_stage_t(g, dt, Vref)
        assert out_t[:, 0].tolist() == ref_t
        Vref.update(Vs_end)
        Vref.update(Vt_end)
        assert {k: v[0].tolist() for k, v in state.V.items()} == Vref
    c = emu.counters
    assert c["a"]["sat_port"] > 0           # the 2^23+5 drive was saturated


def test_hand_values():
    """A few numbers computed by hand from the document."""
    assert dec(-5, 2048) == -2 and dec(5, 2048) == 2 and dec(-1, 4095) == 0
    g = _mini_graph()
    emu = Emulator(g)
    st = emu.new_state(1)
    # neuron a0: B=3000, TH=1000 (f_V 10). drive 800: V_pre = 800 < 1000 → V=800, P = 800>>4 = 50;
    # frame 2: V_pre = (800*3000)>>12 + 800 = 585 + 800 = 1385 ≥ 1000 → V = 385, P = 24
    _, st, tr = emu.run_stage("s", torch.tensor([[800, 0, 0]]), st, trace=True)
    assert tr["a"]["V"][:2, 0, 0].tolist() == [800, 385]
    assert tr["a"]["P"][:2, 0, 0].tolist() == [50, 24]
    # neuron a1: TH = -200 < 0 with zero drive: V_pre = 0 ≥ −200 fires → V = 200 each frame (B = 4096 keeps it)
    assert tr["a"]["V"][:3, 0, 1].tolist() == [200, 400, 600]


def test_lut_tables_and_boundaries():
    s, sp = lut_sigmoid(), lut_softplus()
    assert s.shape == (4096,) and s.min() >= 0 and s.max() <= 4096
    assert s[2048] == 2050 and s[2047] == 2046 and s[0] == 1 and s[4095] == 4095
    assert np.all(np.diff(s) >= 0) and np.all(np.diff(sp) >= 0)
    assert sp[0] == 1 and sp[4095] == math.floor((7.998046875 + math.log1p(math.exp(-7.998046875))) * 4096 + 0.5)
    from ns_compile.sim import intops as I
    lut = torch.as_tensor(sp)
    x = torch.tensor([8191, 8192, -8192, -8193, -1, 2 ** 30])          # f_x = 10
    got = I.lut_softplus(x, 10, lut).tolist()
    assert got[0] == sp[4095] and got[1] == 32768 and got[2] == sp[0] and got[3] == sp[0]
    assert got[4] == sp[2047] and got[5] == 2 ** 32
    gs = I.lut_sigmoid(torch.tensor([2 ** 40, -2 ** 40, 0, -1]), 20, torch.as_tensor(s)).tolist()
    assert gs == [s[4095], s[0], s[2048], s[2047]]
    x = torch.tensor([5, -7])                                       # f_x < 8 shifts left
    assert I.lut_index(x, 6).tolist() == [2048 + 20, 2048 - 28]


# ---- host ops --------------------------------------------------------------------------------------

def _rms_ref(X, fx, G, fg, fo, eps=1e-6):
    D = len(X)
    ms = sum(x * x for x in X)
    epsi = math.floor(eps * D * 2.0 ** (2 * fx) + 0.5)
    R = math.isqrt((2 ** 60 * D * 2 ** (2 * fx)) // (ms + epsi))
    return [sat(sh(((x * R) >> 30) * g, fx + fg, fo), 24) for x, g in zip(X, G)]


def test_host_rmsnorm_and_embedding():
    rng = np.random.default_rng(3)
    H = rng.integers(-2 ** 20, 2 ** 20, size=(2, 6))
    G = rng.integers(-2 ** 15, 2 ** 15, size=6)
    op = HostOp("n", "rmsnorm_drive", ["H"], ["drive"], {"G": G}, {"f_X": 16, "f_G": 14, "f_out": 18},
                {"quantized": True})
    out = run_host_op(op, {"H": torch.as_tensor(H)})["drive"]
    for b in range(2):
        assert out[b].tolist() == _rms_ref(H[b].tolist(), 16, G.tolist(), 14, 18)
    # the integer RMSNorm approximates the real one
    real = G * 2.0 ** -14 * H / np.sqrt((H.astype(float) ** 2).mean(-1, keepdims=True) + 1e-6 * 2.0 ** 32)
    assert np.abs(out.numpy() * 2.0 ** -18 - real).max() < 1e-3
    E = rng.integers(-2 ** 23 + 1, 2 ** 23, size=(10, 6))
    emb = HostOp("e", "embedding", ["ids"], ["H"], {"E": E}, {"f_H": 16}, {"quantized": True})
    assert run_host_op(emb, {"ids": torch.tensor([7, 2])})["H"].tolist() == E[[7, 2]].tolist()


def test_host_ponder_decode_head():
    rng = np.random.default_rng(4)
    K, D = 5, 4
    F = rng.integers(-2 ** 18, 2 ** 18, size=(K, 1, D))
    H = rng.integers(-2 ** 22, 2 ** 22, size=(1, D))
    WH = rng.integers(-2 ** 15, 2 ** 15, size=D)
    WO = rng.integers(-2 ** 15, 2 ** 15, size=(D, D))
    fmt = {"f_F": 15, "f_WH": 16, "f_WO": 17, "f_H": 18}
    op = HostOp("p", "ponder_residual", ["H", "F"], ["H"],
                {"WH": WH, "BH": np.array([-12345]), "WO": WO, "LUT_sigmoid": LUTS["sigmoid"]}, fmt, {"quantized": True})
    got = run_host_op(op, {"H": torch.as_tensor(H), "F": torch.as_tensor(F)})["H"][0].tolist()
    # reference transcription
    S, NUM, DEN = 4096, [0] * D, 0
    for k in range(K):
        Z = sum(int(w) * int(f) for w, f in zip(WH, F[k, 0])) - 12345
        P = min(4095, max(1, sig(Z, 31)))
        L = (P * S) >> 12
        S = (S * (4096 - P)) >> 12
        NUM = [n + L * int(f) for n, f in zip(NUM, F[k, 0])]
        DEN += L
    AGG = [n // max(DEN, 1) for n in NUM]
    want = [sat(int(H[0, i]) + sh(sum(int(WO[i, j]) * AGG[j] for j in range(D)), 32, 18), 24) for i in range(D)]
    assert got == want
    # decode: K-sum, decode_proj, bias, lateral inhibition; then the tied head (exact, beyond 2^53)
    O = rng.integers(-2 ** 15, 2 ** 15, size=(K, 1, D))
    WD = rng.integers(-2 ** 15, 2 ** 15, size=(D, D))
    BD = rng.integers(-2 ** 20, 2 ** 20, size=D)
    Gn = rng.integers(-2 ** 15, 2 ** 15, size=D)
    dfmt = {"f_O": 10, "f_WD": 15, "f_Z": 16, "f_G": 14, "f_Y": 18}
    dop = HostOp("d", "decode", ["F"], ["Y"], {"WD": WD, "BD": BD, "G": Gn}, dfmt, {"quantized": True})
    Y = run_host_op(dop, {"F": torch.as_tensor(O)})["Y"]
    M = O[:, 0].sum(0)
    Z = [sat(sh(sum(int(WD[i, j]) * int(M[j]) for j in range(D)), 25, 16) + int(BD[i]), 24) for i in range(D)]
    assert Y[0].tolist() == _rms_ref(Z, 16, Gn.tolist(), 14, 18)
    E = rng.integers(-2 ** 23 + 1, 2 ** 23, size=(7, D))
    E[0] = 2 ** 23 - 1
    Ybig = torch.full((1, D), 2 ** 23 - 1, dtype=torch.int64)
    hop = HostOp("h", "lm_head", ["Y"], ["logits"], {"E": E}, {"f_H": 16, "f_Y": 18}, {"quantized": True})
    r = run_host_op(hop, {"Y": Ybig})
    assert r["LOG"][0].tolist() == [sum(int(e) * (2 ** 23 - 1) for e in row) for row in E]
    assert r["logits"].dtype == torch.float32


def test_sample_greedy_ties_lowest_index():
    op = HostOp("s", "sample", ["logits"], ["ids"])
    lg = torch.tensor([[0.0, 3.0, 3.0, 1.0]])
    assert run_host_op(op, {"logits": lg})["ids"].tolist() == [1]
