"""Hand-built quantized graphs for the Lava backend tests (and schedule checks that need no Lava).

`tiny_ns_graph()` is a NeuronSpark-shaped quantized IR built by hand (no checkpoint, no
quantizer): embedding → [SNNBlock stage → ponder] → [SNNFFN stage → ponder] → decode stage →
decode → tied head, with tiny sizes and integer parameters / fracs chosen so that the neurons
spike, saturate and decay. The LUTs are built here from docs/fixed_point.md §4.
"""
from __future__ import annotations

import math

import numpy as np

from ns_compile.ir import Direct, Graph, HostOp, Population, Stage, Synapse


def q(x, f):
    return np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** f + 0.5).astype(np.int64)


def doc_luts():
    c = (np.arange(4096) - 2048 + 0.5) / 256.0
    sig = np.clip(q(1.0 / (1.0 + np.exp(-c)), 12), 0, 4096)
    sp = q(np.log1p(np.exp(c)), 12)
    return {"sigmoid": sig, "softplus": sp}


def tiny_ns_graph(seed=0, D=4, N=2, Dff=6, V=12, K=3, float_graph=False):
    rng = np.random.default_rng(seed)
    DN = D * N
    g = Graph(family="neuronspark", config={"D": D, "N": N, "K": K, "D_ff": Dff, "vocab_size": V,
                                            "num_layers": 1, "eps": 1e-6})
    luts = doc_luts()
    g.meta["luts"] = luts
    fH, fV, fP, fW, fX, fF = 10, 12, 8, 7, 10, 10

    def ri(lo, hi, shape):
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int64)

    def host(name, kind, ins, outs, params, fmt, **meta):
        g.add_host_op(HostOp(name, kind, ins, outs, params=params, fmt=fmt, meta={"quantized": True, **meta}))

    def syn(name, src, dst, port, shape, f_S, f_A, delay=0, scale=1.0):
        M = np.clip(np.round(rng.normal(0, 60 * scale, size=shape)), -128, 127).astype(np.int64)
        s = Synapse(name, src, dst, port, M, fmt={"bits": 8, "f_W": fW, "f_S": f_S, "f_A": f_A})
        s.meta["delay"] = delay
        g.add_synapse(s)

    E = ri(-3000, 3000, (V, D))
    host("embed", "embedding", ["ids"], ["H"], {"E": E}, {"f_H": fH})
    g.program.append("embed")
    # ---- SNNBlock stage
    st = "L0.block"
    host(f"{st}.norm", "rmsnorm_drive", ["H"], ["drive"], {"G": ri(1500, 5000, D)},
         {"f_X": fH, "f_G": 12, "f_out": fV}, stage=st, target=f"{st}.in")
    g.add_population(Population(f"{st}.in", "plif_static", D, st, {"B": ri(2500, 4000, D), "TH": ri(1500, 5000, D)},
                                0, {"V": fV, "P": fP, "payload_bits": 16}))
    g.add_population(Population(f"{st}.hid", "plif_selective", DN, st,
                                {"BB": ri(-800, 2500, DN), "BA": ri(-1500, 1500, DN), "BT": ri(-1000, 1000, DN),
                                 "VTHMIN": np.array([q(0.1, fV)])}, 1,
                                {"I": fV, "XB": fX, "XA": fX, "XT": fX, "V": fV, "P": fP, "payload_bits": 16}))
    g.add_population(Population(f"{st}.out", "gated_readout", D, st, {}, 2, {"R": fX, "G": fX, "Q": fX, "F": fF}))
    for key, port, fa in (("W_in", "I", fV), ("W_beta_x", "XB", fX), ("W_alpha_x", "XA", fX), ("W_th_x", "XT", fX)):
        syn(f"{st}.{key}", f"{st}.in", f"{st}.hid", port, (DN, D), fP, fa)
    syn(f"{st}.W_gate", f"{st}.in", f"{st}.out", "G", (D, D), fP, fX, 1)
    syn(f"{st}.W_skip", f"{st}.in", f"{st}.out", "Q", (D, D), fP, fX, 1)
    syn(f"{st}.W_out", f"{st}.hid", f"{st}.out", "R", (D, DN), fP, fX)
    ponder = {"WH": ri(-3000, 3000, D), "BH": ri(-2000, 2000, 1), "WO": ri(-2500, 2500, (D, D)),
              "LUT_sigmoid": luts["sigmoid"]}
    pf = {"f_F": fF, "f_WH": 12, "f_WO": 12, "f_H": fH}
    host(f"{st}.ponder", "ponder_residual", ["H", "F"], ["H"], dict(ponder), pf, stage=st)
    g.stages.append(Stage(st, K, f"{st}.norm", [f"{st}.in"], [f"{st}.in", f"{st}.hid", f"{st}.out"], f"{st}.out",
                          f"{st}.ponder"))
    g.program += [f"{st}.norm", st, f"{st}.ponder"]
    # ---- SNNFFN stage
    st = "L0.ffn"
    host(f"{st}.norm", "rmsnorm_drive", ["H"], ["drive"], {"G": ri(1500, 5000, D)},
         {"f_X": fH, "f_G": 12, "f_out": fV}, stage=st, target=f"{st}.in")
    g.add_population(Population(f"{st}.in", "plif_static", D, st, {"B": ri(2500, 4000, D), "TH": ri(1500, 5000, D)},
                                0, {"V": fV, "P": fP, "payload_bits": 16}))
    for nm in ("gate", "up"):
        g.add_population(Population(f"{st}.{nm}", "plif_static", Dff, st,
                                    {"B": ri(2000, 4000, Dff), "TH": ri(-500, 4000, Dff)}, 1,
                                    {"V": fV, "P": fP, "payload_bits": 15, "I": fV}))
    g.add_population(Population(f"{st}.prod", "product", Dff, st, {}, 1, {"exp": 13}))
    g.add_population(Population(f"{st}.out", "accumulate", D, st, {}, 2, {"A": fF, "F": fF}))
    syn(f"{st}.gate_proj", f"{st}.in", f"{st}.gate", "I", (Dff, D), fP, fV)
    syn(f"{st}.up_proj", f"{st}.in", f"{st}.up", "I", (Dff, D), fP, fV)
    g.directs.append(Direct(f"{st}.gate", f"{st}.prod", "X1"))
    g.directs.append(Direct(f"{st}.up", f"{st}.prod", "X2"))
    syn(f"{st}.down_proj", f"{st}.prod", f"{st}.out", "A", (D, Dff), 2 * fP - 13, fF, scale=2.0)
    syn(f"{st}.skip_proj", f"{st}.in", f"{st}.out", "A", (D, D), fP, fF, 1)
    host(f"{st}.ponder", "ponder_residual", ["H", "F"], ["H"],
         {"WH": ri(-3000, 3000, D), "BH": ri(-2000, 2000, 1), "WO": ri(-2500, 2500, (D, D)),
          "LUT_sigmoid": luts["sigmoid"]}, dict(pf), stage=st)
    g.stages.append(Stage(st, K, f"{st}.norm", [f"{st}.in"],
                          [f"{st}.in", f"{st}.gate", f"{st}.up", f"{st}.prod", f"{st}.out"], f"{st}.out", f"{st}.ponder"))
    g.program += [f"{st}.norm", st, f"{st}.ponder"]
    # ---- decode stage
    st = "decode"
    host("decode.norm", "rmsnorm_drive", ["H"], ["drive"], {"G": ri(1500, 5000, D)},
         {"f_X": fH, "f_G": 12, "f_out": fV}, stage=st, target="decode.out")
    g.add_population(Population("decode.out", "plif_static", D, st, {"B": ri(2500, 4000, D), "TH": ri(1500, 5000, D)},
                                0, {"V": fV, "P": fP, "payload_bits": 16}))
    host("decode.head", "decode", ["F"], ["Y"], {"WD": ri(-2000, 2000, (D, D)), "BD": ri(-500, 500, D),
                                            "G": ri(2000, 5000, D)},
         {"f_WD": 12, "f_O": fP, "f_Z": 10, "f_G": 12, "f_Y": 10})
    host("lm_head", "lm_head", ["Y"], ["logits"], {"E": E}, {"f_H": fH, "f_Y": 10})
    g.add_host_op(HostOp("sample", "sample", ["logits"], ["ids"]))
    g.stages.append(Stage(st, K, "decode.norm", ["decode.out"], ["decode.out"], "decode.out", "decode.head"))
    g.program += ["decode.norm", st, "decode.head", "lm_head", "sample"]
    g.quantized = True
    g.validate()
    if float_graph:
        return dequantize(g)
    return g


def dequantize(g):
    """A float twin of a quantized graph (real units), for the floating_pt models."""
    import copy
    f = copy.deepcopy(g)
    f.quantized = False
    for p in f.populations.values():
        fm = g.populations[p.name].fmt
        if p.kind == "plif_static":
            p.params = {"B": p.params["B"] / 4096.0, "TH": p.params["TH"] * 2.0 ** -fm["V"]}
        elif p.kind == "plif_selective":
            p.params = {"BB": p.params["BB"] * 2.0 ** -fm["XB"], "BA": p.params["BA"] * 2.0 ** -fm["XA"],
                        "BT": p.params["BT"] * 2.0 ** -fm["XT"], "VTHMIN": p.params["VTHMIN"] * 2.0 ** -fm["V"]}
    for s in f.synapses.values():
        s.weight = s.weight * 2.0 ** -s.fmt["f_W"]
    for op in f.host_ops.values():
        fm = op.fmt
        op.meta["quantized"] = False
        P = op.params
        if op.kind == "embedding":
            op.params = {"E": P["E"] * 2.0 ** -fm["f_H"]}
        elif op.kind == "rmsnorm_drive":
            op.params = {"G": P["G"] * 2.0 ** -fm["f_G"]}
        elif op.kind == "ponder_residual":
            op.params = {"WH": P["WH"] * 2.0 ** -fm["f_WH"], "BH": P["BH"] * 2.0 ** -(fm["f_WH"] + fm["f_F"]),
                         "WO": P["WO"] * 2.0 ** -fm["f_WO"]}
        elif op.kind == "decode":
            op.params = {"WD": P["WD"] * 2.0 ** -fm["f_WD"], "BD": P["BD"] * 2.0 ** -fm["f_Z"],
                         "G": P["G"] * 2.0 ** -fm["f_G"]}
        elif op.kind == "lm_head":
            op.params = {"E": P["E"] * 2.0 ** -fm["f_H"]}
    f.host_ops["lm_head"].params["E"] = f.host_ops["embed"].params["E"]
    return f


# ---- schedule checks (no Lava needed) --------------------------------------------------------
def test_plan_population_vs_fused():
    from ns_compile.backends.lava.schedule import make_plan
    g = tiny_ns_graph()
    pf = make_plan(g, "fused")
    pp = make_plan(g, "population")
    K = 3
    # fused: stages back to back, K steps each; population: K + readout depth each
    assert [s.offset for s in pf.stages] == [1, 1 + K, 1 + 2 * K]
    assert [s.offset for s in pp.stages] == [1, 1 + K + 2, 1 + 2 * (K + 2)]
    assert pf.period == 1 + 3 * K + 1 and pp.period == 1 + 3 * K + 4 + 1
    blk = pp.stages[0]
    assert blk.early == {"L0.block.out": {"G": 1, "Q": 1}}
    assert pp.stages[1].early == {"L0.ffn.out": {"A": 1}}
    assert pp.frame_step(1, blk, "L0.block.out", 2) == 1 + pp.period + 1 + 2 + 2
    assert math.isfinite(pp.logits_step)
