"""The Nord integer emulator vs an independent transcription of docs/fixed_point.md §7, written
here in plain Python integers from the document (never calling the code under test):
lif_nord (refractory clamp, θ ≤ v_reset, cascade with one frame of delay, saturation), the
integer LayerNorm, and the attention (top-k lowest-index ties, exp table, integer softmax)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ns_compile.ir import Graph, HostOp, Population, Stage, Synapse

M24 = (1 << 23) - 1


def sat(x, n=24):
    m = (1 << (n - 1)) - 1
    return max(-m, min(m, x))


def decay(v, b):
    return (1 if v > 0 else -1 if v < 0 else 0) * ((abs(v) * b) >> 12)


def shift(x, f_from, f_to):
    return x << (f_to - f_from) if f_to >= f_from else x >> (f_from - f_to)


def syn(M, s, bits, fW, fS, fA):
    """§2 for one output row: exact accumulate, ·2^(9−b), wrap32, shift."""
    acc = sum(int(m) * int(x) for m, x in zip(M, s)) << (9 - bits)
    w = ((acc + (1 << 31)) % (1 << 32)) - (1 << 31)
    return shift(w, fW + fS + 9 - bits, fA)


# ---- lif_nord -------------------------------------------------------------------------------------

def lif_doc(drive, TH, BS, BM, VR, RT, Mc, bits, fW, fV):
    """drive [K][n] (port I, already at f_V); Mc cascade mantissas [n][n] (binary input, f_S = 0)."""
    K, n = len(drive), len(drive[0])
    U = [0] * n
    V = [0] * n
    R = [0] * n
    s_prev = [0] * n
    S_out, V_out = [], []
    for k in range(K):
        if k == 0:
            U, V, R = [0] * n, [0] * n, [0] * n
        C = [0] * n if k == 0 else [sat(syn(Mc[i], s_prev, bits, fW, 0, fV)) for i in range(n)]
        s = [0] * n
        for i in range(n):
            U[i] = sat(decay(U[i], BS) + sat(drive[k][i]) + C[i])
            vt = sat(decay(V[i], BM) + U[i])
            V[i] = VR if R[i] > 0 else vt
            s[i] = 1 if V[i] >= TH[i] else 0
            V[i] = sat(V[i] - (TH[i] if s[i] else 0))
            R[i] = RT if s[i] else max(R[i] - 1, 0)
        s_prev = s
        S_out.append(list(s))
        V_out.append(list(V))
    return S_out, V_out


def _lif_graph(n, TH, BS, BM, VR, RT, Mc, bits, fW, fV, K):
    g = Graph(family="nord", config={"K": K, "n_layers": 0, "D": n, "eps": 1e-5}, quantized=True)
    g.add_population(Population("p", "lif_nord", n, "s", params={
        "BS": np.array([BS]), "BM": np.array([BM]), "TH": np.array(TH, dtype=np.int64), "VRESET": np.array([VR]),
        "RT": np.array([RT])}, fmt={"V": fV, "I": fV, "C": fV, "P": 0, "payload_bits": 1}))
    s = Synapse("p.cascade", "p", "p", "C", np.array(Mc, dtype=np.int8), input_kind="binary")
    s.fmt = {"bits": bits, "f_W": fW, "f_S": 0, "f_A": fV}
    s.meta["recurrent"] = True
    g.add_synapse(s)
    g.stages.append(Stage("s", K, "drv", ["p"], ["p"], "p", "after", drive_per_frame=True))
    return g


def test_lif_nord_vs_doc_transcription():
    from ns_compile.sim.nord import NordEmulator
    rng = np.random.default_rng(3)
    n, K, fV, bits, fW = 24, 10, 16, 6, 9
    TH = [int(x) for x in rng.integers(1 << 13, 1 << 15, n)]
    VR = -int(0.1 * (1 << fV))
    TH[0] = VR            # θ == v_reset: fires while refractory
    TH[1] = VR - 500      # θ <  v_reset
    TH[2] = -(1 << 14)    # negative θ
    Mc = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (n, n))
    Mc[:4] = -Mc[:4] - 3  # a few strongly inhibitory rows (negative gain)
    drive = rng.integers(-(1 << 14), 1 << 15, (K, 3, n))
    drive[3, 0, 5] = 1 << 26                         # port saturation
    BS, BM, RT = 2048, 3686, 2
    g = _lif_graph(n, TH, BS, BM, VR, RT, Mc, bits, fW, fV, K)
    emu = NordEmulator(g)
    out = emu.run_stage("s", torch.tensor(drive), 3)["p"]
    S, V = out[0].numpy(), out[1].numpy()
    for r in range(3):
        s_doc, v_doc = lif_doc(drive[:, r].tolist(), TH, BS, BM, VR, RT, Mc.tolist(), bits, fW, fV)
        assert np.array_equal(S[:, r], np.array(s_doc)), r
        assert np.array_equal(V[:, r], np.array(v_doc)), r
    # the edge neurons really fire while refractory (consecutive spikes), the others cannot
    assert (S[1:, :, 0] * S[:-1, :, 0]).sum() > 0 and (S[1:, :, 1] * S[:-1, :, 1]).sum() > 0
    assert (S[1:, :, 10:] * S[:-1, :, 10:]).sum() == 0
    assert emu.counters["p"]["sat_port"] >= 1


def test_cascade_has_one_frame_delay_and_frame0_reset():
    """A single spike at frame k reaches the other neurons' U at frame k+1 only; nothing crosses tokens."""
    from ns_compile.sim.nord import NordEmulator
    n, K, fV = 4, 5, 12
    TH = [1000, 10 ** 6, 10 ** 6, 10 ** 6]
    Mc = np.zeros((n, n), dtype=np.int64)
    Mc[1:, 0] = 100                                   # neuron 0's spike excites 1..3
    g = _lif_graph(n, TH, 0, 0, -409, 2, Mc, 8, 0, fV, K)
    drive = np.zeros((K, 1, n), dtype=np.int64)
    drive[2, 0, 0] = 5000                             # neuron 0 fires at frame 2 (BS = BM = 0: no memory)
    S, V = NordEmulator(g).run_stage("s", torch.tensor(drive), 1)["p"]
    assert S[:, 0, 0].tolist() == [0, 0, 1, 0, 0]
    # U of neurons 1..3 is 0 except at frame 3 (= 100 · 2^(9−8) >> 9 = ... through §2), where V = U
    vv = V[:, 0, 1].tolist()
    expect = syn([100], [1], 8, 0, 0, fV)
    assert vv == [0, 0, 0, expect, 0]


# ---- LayerNorm --------------------------------------------------------------------------------------

def ln_doc(X, f_x, G, f_g, BY, f_y, eps):
    D = len(X)
    L = max(1, math.ceil(math.log2(D)))
    s = max(0, -(-(3 * L - 14) // 2))
    f_r = min(30, 60 - (-(-3 * L // 2)) - (f_x - s))
    S = sum(X)
    U = [(D * x - S) >> s for x in X]
    QS = sum(u * u for u in U)
    EPSI = math.floor(eps * D ** 3 * 2.0 ** (2 * (f_x - s)) + 0.5)
    R = math.isqrt((D ** 3 * 2 ** (2 * f_r + 2 * (f_x - s))) // (QS + EPSI)) if QS + EPSI > 0 else 0
    N = [(u * R) // (D * 2 ** (f_r + f_x - s - 16)) for u in U]
    return [sat(shift(nn * gg, 16 + f_g, f_y) + bb, 16) for nn, gg, bb in zip(N, G, BY)]


def test_layernorm_vs_doc_transcription():
    from ns_compile.lower.nord import ln_frac_r, ln_shift
    from ns_compile.sim.nord_host import layernorm_int
    rng = np.random.default_rng(5)
    for D, f_x in ((64, 20), (100, 18), (512, 21), (7, 10)):
        X = rng.integers(-(1 << 22), 1 << 22, (6, D))
        X[0] = 12345                                  # zero variance row
        X[1, :] = M24
        X[1, 0] = -M24                                # extreme spread
        G = rng.integers(-(1 << 15), 1 << 15, D)
        BY = rng.integers(-3000, 3000, D)
        f_g, f_y = 14, 11
        got = layernorm_int(torch.tensor(X), f_x, torch.tensor(G), f_g, torch.tensor(BY), f_y, 1e-5,
                            ln_shift(D), ln_frac_r(D, f_x)).numpy()
        for r in range(X.shape[0]):
            assert got[r].tolist() == ln_doc(X[r].tolist(), f_x, G.tolist(), f_g, BY.tolist(), f_y, 1e-5), (D, r)


# ---- attention ---------------------------------------------------------------------------------------

def attn_doc(Q, Kk, VB, sgn, EXP, top_k, H, offset):
    """Q [K][S][D] 0/1, Kk [K][Sk][D], VB [Sk][D]; returns CTX [S][D] (§7.3)."""
    Kf, S, D = len(Q), len(Q[0]), len(Q[0][0])
    Sk = len(Kk[0])
    Dh = D // H
    ctx = [[0] * D for _ in range(S)]
    for h in range(H):
        cs = range(h * Dh, (h + 1) * Dh)
        for i in range(S):
            vis = [j for j in range(Sk) if j <= i + offset]
            key = {j: sgn * sum(Q[t][i][c] * Kk[t][j][c] for t in range(Kf) for c in cs) for j in vis}
            kstar = min(top_k, Sk)
            if kstar < Sk:
                order = sorted(vis, key=lambda j: (-key[j], j))      # lowest index first among ties
                kept = order[:kstar]
            else:
                kept = vis
            m = max(key[j] for j in kept)
            E = {j: int(EXP[m - key[j]]) for j in kept}
            den = sum(E.values())
            for c in cs:
                ctx[i][c] = sum(E[j] * int(VB[j][c]) for j in kept) // den
    return ctx


def test_exp_table_and_attention_vs_doc():
    from ns_compile.sim.nord_host import attention, exp_table
    tau, Kf, D, H = 0.125, 3, 8, 2
    EXP = exp_table(tau, Kf * D // H)
    assert EXP[0] == 65536 and all(EXP[n] == math.floor(math.exp(-tau * n) * 65536 + 0.5) for n in range(len(EXP)))
    rng = np.random.default_rng(7)
    S = 9
    Q = (rng.random((Kf, 1, S, D)) < 0.3).astype(np.int64)
    Kk = (rng.random((Kf, 1, S, D)) < 0.3).astype(np.int64)
    Kk[:, :, 2] = Kk[:, :, 1]                         # duplicate keys → guaranteed ties
    Kk[:, :, 5] = 0                                   # a never-firing key (count 0 ties)
    Y = rng.integers(-2000, 2000, (Kf, 1, S, D))
    WV = rng.integers(-300, 300, (D, D))
    WO = rng.integers(-300, 300, (D, D))
    for sgn, top_k in ((1, 3), (-1, 4), (0, 2), (1, 64)):
        op = HostOp("a", "nord_attention", [], [], params={"WV": WV, "WO": WO, "EXP": EXP,
                                                           "SGN": np.array([sgn])},
                    fmt={"f_X": 12, "f_Y": 10, "f_WV": 8, "f_VB": 9, "f_WO": 8},
                    meta={"quantized": True, "heads": H, "top_k": top_k})
        X = torch.zeros(Kf, 1, S, D, dtype=torch.int64)
        out = attention(op, X, torch.tensor(Y), torch.tensor(Q), torch.tensor(Kk), None, {}, want=True)
        SY = Y.sum(0)[0]
        VB = [[sat(shift(sum(int(WV[c][d]) * int(SY[j][d]) for d in range(D)), 18, 9)) for c in range(D)]
              for j in range(S)]
        ctx = attn_doc(Q[:, 0].tolist(), Kk[:, 0].tolist(), VB, sgn, EXP, top_k, H, 0)
        for i in range(S):
            O = [sum(int(WO[d][c]) * ctx[i][c] for c in range(D)) for d in range(D)]
            want = [sat(shift(o, 17, 12)) for o in O]
            assert out["X"][0, 0, i].tolist() == want, (sgn, top_k, i)
