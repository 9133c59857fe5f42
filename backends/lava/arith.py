"""Integer arithmetic of docs/fixed_point.md (v1) for the Lava fixed_pt models, and the same
dynamics in float (real units) for the floating_pt models.

Pure numpy, no Lava import: the per-population ProcessModels and the fused stage model both call
these functions, so the two granularities share one implementation of every neuron update.
Everything is int64 internally; only the operations the contract names round, wrap or saturate.
"""
from __future__ import annotations

import numpy as np

I64 = np.int64
SAT24 = (1 << 23) - 1


# -- §0 primitives -----------------------------------------------------------------------------
def sat(x, n: int):
    """sat_n: clamp to [-(2^(n-1)-1), 2^(n-1)-1] (symmetric)."""
    m = (1 << (n - 1)) - 1
    return np.clip(np.asarray(x, dtype=I64), -m, m)


def sat24(x):
    return np.clip(np.asarray(x, dtype=I64), -SAT24, SAT24)


def wrap32(x):
    x = np.asarray(x, dtype=I64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def shift(x, f_from: int, f_to: int):
    """shift(X, f_from -> f_to): left shift, or arithmetic (floor) right shift."""
    x = np.asarray(x, dtype=I64)
    d = int(f_to) - int(f_from)
    return x << d if d >= 0 else x >> (-d)


def decay(v, b):
    """sign(V) * ((|V| * B) >> 12): multiply by B/4096 rounded toward zero."""
    v = np.asarray(v, dtype=I64)
    b = np.asarray(b, dtype=I64)
    return np.sign(v) * ((np.abs(v) * b) >> 12)


# -- §4 lookup tables --------------------------------------------------------------------------
def lut_index(x, f_x: int):
    return np.clip(shift(x, f_x, 8) + 2048, 0, 4095)


def lut_sigmoid(x, f_x: int, table):
    return np.asarray(table, dtype=I64)[lut_index(x, f_x)]


def lut_softplus(x, f_x: int, table):
    x = np.asarray(x, dtype=I64)
    s8 = shift(x, f_x, 8)
    return np.where(s8 >= 2048, shift(x, f_x, 12), np.asarray(table, dtype=I64)[np.clip(s8 + 2048, 0, 4095)])


# -- §2 synapse group --------------------------------------------------------------------------
def synapse_fixed(m, s, bits: int, weight_exp: int, acc_float_ok: bool = True):
    """A = shift(wrap32(ACC * 2^(9-b)), (f_W+f_S+9-b) -> f_A), written with weight_exp =
    f_A - (f_W+f_S+9-b). `m` holds the mantissas M (int). ACC is exact: computed in float64
    (BLAS) when |M|<=2^8, |S|<2^31 and fan-in < 2^13 keep every partial sum below 2^53, else int64."""
    s = np.asarray(s, dtype=I64)
    if acc_float_ok and m.shape[1] < (1 << 13) and (s.size == 0 or int(np.abs(s).max()) < (1 << 31)):
        acc = (np.asarray(m, dtype=np.float64) @ s.astype(np.float64)).astype(I64)
    else:
        acc = np.asarray(m, dtype=I64) @ s
    w = wrap32(acc << (9 - bits))
    return w << weight_exp if weight_exp >= 0 else w >> (-weight_exp)


def port_row_shift(x, r):
    """§2.1: the exact port sum of a port's synapse groups, floor-shifted by the neuron's per-row
    RS vector (r_i >= 0), before the drive and the port's sat_24."""
    return np.asarray(x, dtype=I64) >> np.asarray(r, dtype=I64)


def row_shifts(params) -> dict:
    """{port: r} from a population's params (keys RS_<port>, docs/fixed_point.md §2.1)."""
    return {k[3:]: np.asarray(v, dtype=I64).reshape(-1) for k, v in (params or {}).items() if k.startswith("RS_")}


# -- §3 neuron updates (fixed) ----------------------------------------------------------------
# `ports` values are the exact (int64) port sums; each update applies sat_24 to every synapse-fed
# port before use (§2: the receiving neuron saturates the sum of everything arriving at a port).
# Direct (synapse-free) product inputs are payloads and are used as they are (§3.4).

def plif_static_fixed(V, I, B, TH, f_V: int, f_P: int, pbits: int):
    V_pre = sat24(decay(V, B) + sat24(I))
    s = V_pre >= TH
    V_new = sat24(V_pre - np.where(s, TH, 0))
    out = sat(shift(V_new, f_V, f_P), pbits)
    return V_new, out


def plif_selective_fixed(V, I, XB, XA, XT, BB, BA, BT, VTHMIN, fmt, luts):
    f_V, f_I, f_XB, f_XA, f_XT = fmt["V"], fmt["I"], fmt["XB"], fmt["XA"], fmt["XT"]
    xb = sat24(sat24(XB) + BB)
    Bt = lut_sigmoid(xb, f_XB, luts["sigmoid"])
    xa = sat24(sat24(XA) + BA)
    At = lut_softplus(xa, f_XA, luts["softplus"])
    xt = sat24(sat24(XT) + BT)
    Tt = sat24(np.asarray(VTHMIN, dtype=I64) + shift(np.abs(xt), f_XT, f_V))
    U = sat24(shift(At * sat24(I), 12 + f_I, f_V))
    V_pre = sat24(decay(V, Bt) + U)
    s = V_pre >= Tt
    V_new = sat24(V_pre - np.where(s, Tt, 0))
    out = sat(shift(V_new, f_V, fmt["P"]), fmt.get("payload_bits", 16))
    return V_new, out


def gated_readout_fixed(R, G, Q, fmt, luts):
    f_F = out_frac(fmt)
    g = lut_sigmoid(sat24(G), fmt["G"], luts["sigmoid"])
    return sat24(shift(sat24(R) * g, fmt["R"] + 12, f_F) + shift(sat24(Q), fmt["Q"], f_F))


def accumulate_fixed(A):
    return sat24(A)


def product_fixed(X1, X2, exp: int):
    return wrap32(np.asarray(X1, dtype=I64) * np.asarray(X2, dtype=I64)) >> int(exp)


def out_frac(fmt) -> int:
    """Frac of a host-bound output (gated_readout / accumulate): f_F."""
    for k in ("F", "out", "P", "A"):
        if k in fmt:
            return int(fmt[k])
    raise KeyError("no output frac (F) in fmt")


# -- float (real units) -----------------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softplus(x):
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def plif_static_float(V, I, beta, theta):
    V_pre = beta * V + I
    s = V_pre >= theta
    V_new = V_pre - np.where(s, theta, 0.0)
    return V_new, V_new


def plif_selective_float(V, I, XB, XA, XT, BB, BA, BT, VTHMIN):
    beta = sigmoid(XB + BB)
    alpha = softplus(XA + BA)
    theta = VTHMIN + np.abs(XT + BT)
    V_pre = beta * V + alpha * I
    s = V_pre >= theta
    V_new = V_pre - np.where(s, theta, 0.0)
    return V_new, V_new


def gated_readout_float(R, G, Q):
    return R * sigmoid(G) + Q


# -- per-type dispatch used by both granularities ---------------------------------------------
STATEFUL = {"plif_static": True, "plif_selective": True, "gated_readout": False,
            "product": False, "accumulate": False}


def neuron_step_fixed(kind: str, V, ports: dict, params: dict, fmt: dict, luts):
    """One frame of one population. `ports` maps port name -> summed input (int64; missing = 0).
    Returns (V_new or None, out)."""
    if kind == "plif_static":
        return plif_static_fixed(V, ports["I"], params["B"], params["TH"], fmt["V"], fmt["P"],
                                 fmt.get("payload_bits", 16))
    if kind == "plif_selective":
        return plif_selective_fixed(V, ports["I"], ports["XB"], ports["XA"], ports["XT"], params["BB"],
                                    params["BA"], params["BT"], params["VTHMIN"], fmt, luts)
    if kind == "gated_readout":
        return None, gated_readout_fixed(ports["R"], ports["G"], ports["Q"], fmt, luts)
    if kind == "accumulate":
        return None, accumulate_fixed(ports["A"])
    if kind == "product":
        return None, product_fixed(ports["X1"], ports["X2"], fmt["exp"] if "exp" in fmt else params["exp"])
    raise KeyError(kind)


def neuron_step_float(kind: str, V, ports: dict, params: dict):
    if kind == "plif_static":
        return plif_static_float(V, ports["I"], params["B"], params["TH"])
    if kind == "plif_selective":
        return plif_selective_float(V, ports["I"], ports["XB"], ports["XA"], ports["XT"], params["BB"],
                                    params["BA"], params["BT"], params["VTHMIN"])
    if kind == "gated_readout":
        return None, gated_readout_float(ports["R"], ports["G"], ports["Q"])
    if kind == "accumulate":
        return None, np.asarray(ports["A"], dtype=np.float64)
    if kind == "product":
        return None, np.asarray(ports["X1"], dtype=np.float64) * np.asarray(ports["X2"], dtype=np.float64)
    raise KeyError(kind)
