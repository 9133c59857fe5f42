"""NeuronSpark-V1 → float IR (docs/fixed_point.md, spec shared/research/neuronspark.md §3, §3.8, §7).

Per layer ℓ two stages, then the decode stage:

  stage "L{ℓ}.block" (SNNBlock):   host drive → L{ℓ}.block.in (plif_static, D)
        in ─W_in/W_beta_x/W_alpha_x/W_th_x→ L{ℓ}.block.hid (plif_selective, DN) ports I/XB/XA/XT
        in ─W_gate→ L{ℓ}.block.out port G,  in ─W_skip→ out port Q,  hid ─W_out→ out port R
        L{ℓ}.block.out (gated_readout, D) is read out every frame → host op L{ℓ}.block.ponder
  stage "L{ℓ}.ffn" (SNNFFN):       host drive → L{ℓ}.ffn.in (plif_static, D)
        in ─gate_proj→ L{ℓ}.ffn.gate (plif_static, D_ff),  in ─up_proj→ L{ℓ}.ffn.up (plif_static, D_ff)
        gate, up ─Direct→ L{ℓ}.ffn.prod (product, D_ff) ─down_proj→ L{ℓ}.ffn.out (accumulate, D)
        in ─skip_proj→ L{ℓ}.ffn.out;  out → host op L{ℓ}.ffn.ponder
  stage "output":                  host drive (output.norm) → output.neuron (plif_static, D) → host ops
        decode (K-sum, decode_proj, lateral inhibition) → lm_head (tied) → sample

Folding (spec §3.8): every plif_static payload is its raw V_post; its leak factor a = 1−β is
folded into the columns of every synapse group it feeds (and, for the FFN product, a_g·a_u into
down_proj, for the output neuron a_out/K into decode_proj). The (1−β)·x input scaling of a
plif_static is folded into the rows of its incoming weights, or into its RMSNorm gain when the
host drives it. Residual centering is folded into out_proj. Nothing dynamic is folded.

Float parameters keep real units: plif_static B = β, TH = θ; plif_selective BB/BA/BT biases and
VTHMIN; host ops hold folded gains / matrices (names as docs/fixed_point.md §5).
"""
from __future__ import annotations

import numpy as np

from ns_compile.ir import Direct, Graph, HostOp, Population, Stage, Synapse

NORM_EPS = 1e-6
HALT_CLAMP = 1e-7
PONDER_EPS = 1e-8


def _np(t, dtype=np.float64):
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").double().numpy()
    return np.asarray(t, dtype=dtype)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lower_neuronspark(cfg, weights: dict | None) -> Graph:
    """cfg: NSConfig (or a dict with its sizes); weights: the state dict without the "model."
    prefix (torch tensors or numpy), or None for a shape-only graph."""
    if isinstance(cfg, dict):
        from ns_compile.models.neuronspark.config import NSConfig
        cfg = NSConfig.from_dict(cfg, "config")
    D, N, K, L, Dff, V = cfg.D, cfg.N, cfg.K, cfg.num_layers, cfg.D_ff, cfg.vocab_size
    DN = D * N
    have = weights is not None

    def W(key):
        return _np(weights[key]) if have else None

    def leak(prefix):
        """β and a = 1-β of a static PLIF, float64."""
        b = _sigmoid(W(prefix + ".w"))
        return b, 1.0 - b

    def mat(x, shape):
        return None if x is None else np.ascontiguousarray(x, dtype=np.float32)

    g = Graph(family="neuronspark", config={**cfg.sizes(), "eps": NORM_EPS, "halt_clamp": HALT_CLAMP,
                                            "ponder_eps": PONDER_EPS})
    g.meta["frames"] = K
    g.meta["shape_only"] = not have

    def pop(name, kind, size, stage, depth, params=None, **meta):
        return g.add_population(Population(name, kind, size, stage, params=params or {}, depth=depth,
                                           meta=dict(meta)))

    def syn(name, src, dst, port, w, shape, delay=0):
        s = Synapse(name, src, dst, port, mat(w, shape), shape=tuple(shape))
        s.meta["delay"] = delay
        return g.add_synapse(s)

    def host(name, kind, inputs, outputs, params=None, **meta):
        return g.add_host_op(HostOp(name, kind, list(inputs), list(outputs), params=params or {}, meta=dict(meta)))

    E = W("embed_tokens.weight")
    host("embed", "embedding", ["ids"], ["H"], {"E": mat(E, (V, D))} if have else {})
    g.program.append("embed")

    for i in range(L):
        p = f"layers.{i}."
        # ---------------- sublayer 1: SNNBlock ----------------
        st = f"L{i}.block"
        sb = p + "snn_block."
        if have:
            b1, a1 = leak(p + "input_neuron1")
            cols = a1[None, :]
            params_in = {"B": b1, "TH": W(p + "input_neuron1.v_th")}
            params_hid = {"BB": W(sb + "b_beta"), "BA": W(sb + "b_alpha"), "BT": W(sb + "b_th"),
                          "VTHMIN": np.array([cfg.v_th_min])}
            gain = W(p + "block_norm.weight") * a1
            wo = W(p + "block_out_proj.weight")
            wo = wo - wo.mean(axis=0, keepdims=True)          # (I − 11ᵀ/D)·W
            ponder_params = {"WH": W(p + "block_halt.weight").reshape(D), "BH": W(p + "block_halt.bias").reshape(1),
                             "WO": mat(wo, (D, D))}
        else:
            cols = None
            params_in = params_hid = ponder_params = {}
            gain = None
        host(f"{st}.norm", "rmsnorm_drive", ["H"], ["drive"], {"G": gain} if have else {},
             stage=st, target=f"{st}.in")
        pop(f"{st}.in", "plif_static", D, st, 0, params_in)
        pop(f"{st}.hid", "plif_selective", DN, st, 1, params_hid)
        pop(f"{st}.out", "gated_readout", D, st, 2)
        for key, port in (("W_in", "I"), ("W_beta_x", "XB"), ("W_alpha_x", "XA"), ("W_th_x", "XT")):
            syn(f"{st}.{key}", f"{st}.in", f"{st}.hid", port, W(sb + key + ".weight") * cols if have else None, (DN, D))
        syn(f"{st}.W_gate", f"{st}.in", f"{st}.out", "G", W(sb + "W_gate.weight") * cols if have else None, (D, D), 1)
        syn(f"{st}.W_skip", f"{st}.in", f"{st}.out", "Q", W(sb + "W_skip.weight") * cols if have else None, (D, D), 1)
        syn(f"{st}.W_out", f"{st}.hid", f"{st}.out", "R", W(sb + "W_out.weight") if have else None, (D, DN))
        host(f"{st}.ponder", "ponder_residual", ["H", "F"], ["H"], ponder_params, stage=st)
        g.stages.append(Stage(st, K, f"{st}.norm", [f"{st}.in"], [f"{st}.in", f"{st}.hid", f"{st}.out"],
                              f"{st}.out", f"{st}.ponder"))
        g.program += [f"{st}.norm", st, f"{st}.ponder"]

        # ---------------- sublayer 2: SNNFFN ----------------
        st = f"L{i}.ffn"
        sf = p + "snn_ffn."
        if have:
            b2, a2 = leak(p + "input_neuron2")
            bg, ag = leak(sf + "gate_neuron")
            bu, au = leak(sf + "up_neuron")
            params_in = {"B": b2, "TH": W(p + "input_neuron2.v_th")}
            params_g = {"B": bg, "TH": W(sf + "gate_neuron.v_th")}
            params_u = {"B": bu, "TH": W(sf + "up_neuron.v_th")}
            gain = W(p + "ffn_norm.weight") * a2
            wo = W(p + "ffn_out_proj.weight")
            wo = wo - wo.mean(axis=0, keepdims=True)
            ponder_params = {"WH": W(p + "ffn_halt.weight").reshape(D), "BH": W(p + "ffn_halt.bias").reshape(1),
                             "WO": mat(wo, (D, D))}
            w_gate = ag[:, None] * W(sf + "gate_proj.weight") * a2[None, :]
            w_up = au[:, None] * W(sf + "up_proj.weight") * a2[None, :]
            w_down = W(sf + "down_proj.weight") * (ag * au)[None, :]
            w_skip = W(sf + "skip_proj.weight") * a2[None, :]
        else:
            params_in = params_g = params_u = ponder_params = {}
            gain = w_gate = w_up = w_down = w_skip = None
        host(f"{st}.norm", "rmsnorm_drive", ["H"], ["drive"], {"G": gain} if have else {},
             stage=st, target=f"{st}.in")
        pop(f"{st}.in", "plif_static", D, st, 0, params_in)
        pop(f"{st}.gate", "plif_static", Dff, st, 1, params_g, payload_bits=15)
        pop(f"{st}.up", "plif_static", Dff, st, 1, params_u, payload_bits=15)
        pop(f"{st}.prod", "product", Dff, st, 1)
        pop(f"{st}.out", "accumulate", D, st, 2)
        syn(f"{st}.gate_proj", f"{st}.in", f"{st}.gate", "I", w_gate, (Dff, D))
        syn(f"{st}.up_proj", f"{st}.in", f"{st}.up", "I", w_up, (Dff, D))
        g.directs.append(Direct(f"{st}.gate", f"{st}.prod", "X1"))
        g.directs.append(Direct(f"{st}.up", f"{st}.prod", "X2"))
        syn(f"{st}.down_proj", f"{st}.prod", f"{st}.out", "A", w_down, (D, Dff))
        syn(f"{st}.skip_proj", f"{st}.in", f"{st}.out", "A", w_skip, (D, D), 1)
        host(f"{st}.ponder", "ponder_residual", ["H", "F"], ["H"], ponder_params, stage=st)
        g.stages.append(Stage(st, K, f"{st}.norm", [f"{st}.in"],
                              [f"{st}.in", f"{st}.gate", f"{st}.up", f"{st}.prod", f"{st}.out"],
                              f"{st}.out", f"{st}.ponder"))
        g.program += [f"{st}.norm", st, f"{st}.ponder"]

    # ---------------- decode ----------------
    st = "output"
    if have:
        bo, ao = leak("output_neuron")
        params_o = {"B": bo, "TH": W("output_neuron.v_th")}
        gain = W("output_norm.weight") * ao
        dec_params = {"WD": mat(W("decode_proj.weight") * (ao / K)[None, :], (D, D)),
                      "BD": W("decode_proj.bias"), "G": W("norm.gain")}
    else:
        params_o, gain, dec_params = {}, None, {}
    host("output.norm", "rmsnorm_drive", ["H"], ["drive"], {"G": gain} if have else {}, stage=st,
         target="output.neuron")
    pop("output.neuron", "plif_static", D, st, 0, params_o)
    host("decode", "decode", ["F"], ["Y"], dec_params, stage=st)
    # the tied head shares the embedding array (serialised once)
    host("lm_head", "lm_head", ["Y"], ["logits"], {"E": g.host_ops["embed"].params["E"]} if have else {},
         tied_to="embed")
    host("sample", "sample", ["logits"], ["ids"])
    g.stages.append(Stage(st, K, "output.norm", ["output.neuron"], ["output.neuron"], "output.neuron", "decode"))
    g.program += ["output.norm", st, "decode", "lm_head", "sample"]
    assert len(set(g.program)) == len(g.program) and not set(g.host_ops) & {x.name for x in g.stages}
    g.validate()
    return g
