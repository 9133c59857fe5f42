"""Nord v4.2 → float IR (docs/fixed_point.md §7.5, spec shared/research/nord.md §2).

The v3 building blocks (lif_nord + cascade, per-frame host drives, host-fed synapse groups, the
encoder / LayerNorm / readout host ops) plus the v4 pieces. Per token (rows independent, every LIF
fresh per token — the memory LIF too: its upstream persistence is an opt-in quirk we do not lower):

  encoder → stage input (input_lif) → input.res
  per block p (sensory_blocks.i, association_blocks.i, executive_blocks.i in that order; the memory
  cortex runs right before the first executive block, or after the last block if there is none):
    p.norm1 → stage p.qk (lif_q, lif_k) → p.attn  (nord4_attention: temporal mix, half-split RoPE,
                                                   real-valued scores; SDPA = full causal softmax
                                                   or top-k lowest index, from use_sdpa_attention)
    p.norm2 → sensory / executive: stage p.ffn (lif1 → lif2) → p.ffn_res (LeakyClamp; ReLU in executive)
            → association:        stage p.moe.route (route_lif, host-fed diagonal group)
                                  → p.moe.gate (cluster rates, scores + bias, top-k, softmax; host)
                                  → stage p.moe.experts (all experts instantiated block-diagonally:
                                    lif1 = E·(d_ff/E), lif2 = E·D; an unselected expert's slice of
                                    the payload is zero, so it never fires and costs no events)
                                  → p.ffn_res (nord4_moe_residual: X += γ·Σ w_e·s2_e, LeakyClamp)
  memory.in (payload X) → stage memory (memory_lif emit_v, gate_lif) → memory.read (read attention
  over the K frames, gate, from_memory, mem_norm·σ(memory_mix) folded, X += ...)
  readout.drive → stage readout → readout.ema → lm_head → sample
"""
from __future__ import annotations

import numpy as np
import torch

from ns_compile.ir import Graph, HostOp, Population, Stage, Synapse
from ns_compile.lower.nord import LN_EPS, _np, _sigmoid, cascade_matrix


def _block_diag(m: np.ndarray, n: int) -> np.ndarray:
    r, c = m.shape
    out = np.zeros((r * n, c * n), dtype=np.float64)
    for e in range(n):
        out[e * r:(e + 1) * r, e * c:(e + 1) * c] = m
    return out


def lower_nord_v4(cfg, sd: dict | None, use_sdpa: bool | None = None) -> Graph:
    from ns_compile.models.nord.lif import make_lif
    from ns_compile.models.nord.shapes import block_names
    from ns_compile.models.nord.v4 import rope_tables

    D, F, V, H = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads
    K = cfg.T + cfg.T_slow
    nc = cfg.n_clusters
    E, kx = int(cfg.n_experts), int(cfg.top_k_experts)
    ef = F // E
    M, Hr = int(cfg.memory_size), int(cfg.memory_n_read_heads)
    sdpa = bool(cfg.use_sdpa_attention if use_sdpa is None else use_sdpa)
    have = sd is not None
    blocks = block_names(cfg)

    def W(key):
        return _np(sd[key]) if have else None

    def f32(x):
        return None if x is None else np.ascontiguousarray(x, dtype=np.float32)

    config = {"D": D, "d_ff": F, "n_layers": len(blocks), "vocab_size": V, "n_heads": H, "K": K, "T": cfg.T,
              "T_slow": cfg.T_slow, "n_clusters": nc, "resonance_top_k": cfg.resonance_top_k,
              "max_seq_len": cfg.max_seq_len, "v_reset": cfg.v_reset, "refractory_t": cfg.refractory_t,
              "eps": LN_EPS, "version": "v4", "use_sdpa_attention": sdpa, "n_experts": E, "top_k_experts": kx,
              "memory_size": M, "memory_n_read_heads": Hr, "blocks": [p for _c, p in blocks]}
    g = Graph(family="nord", config=config)
    g.meta["frames"] = K
    g.meta["shape_only"] = not have

    def lif(name, size, stage, depth, emit_v=False, copies=1):
        """lif_nord population (v4 clamps applied: make_lif) + its cascade; `copies` > 1 instantiates
        the shared LIF once per expert (block-diagonal cascade). Returns (1 − β_mem)."""
        n = size * copies
        if have:
            p = make_lif(sd, name, cfg)
            bm, bs = float(p.beta_mem), float(p.beta_syn)
            theta = np.tile(_np(p.theta), copies)
            params = {"BS": np.array([bs]), "BM": np.array([bm]), "TH": theta,
                      "VRESET": np.array([float(cfg.v_reset)]), "RT": np.array([int(cfg.refractory_t)], dtype=np.int64)}
            wc = cascade_matrix(_np(p.coupling), _np(p.gain), _np(p.cluster_ids).astype(np.int64), size,
                                (1.0 - bm) * bs)
            if copies > 1:
                wc = _block_diag(wc, copies)
        else:
            bm, params, wc = None, {}, None
        meta = {"binary": True}
        if emit_v:
            meta["emit_v"] = True
        if copies > 1:
            meta["copies"] = copies
        g.add_population(Population(name, "lif_nord", n, stage, params=params, depth=depth, meta=meta))
        s = Synapse(f"{name}.cascade", name, name, "C", f32(wc), input_kind="binary", shape=(n, n))
        s.meta.update({"recurrent": True, "delay": 0, "cascade": True})
        g.add_synapse(s)
        return None if bm is None else 1.0 - bm

    def syn(name, src, dst, w, shape, kind="graded"):
        s = Synapse(name, src, dst, "I", f32(w), input_kind=kind, shape=tuple(shape))
        s.meta["delay"] = 0
        return g.add_synapse(s)

    def host(name, kind, inputs, outputs, params=None, **meta):
        return g.add_host_op(HostOp(name, kind, list(inputs), list(outputs), params=params or {}, meta=dict(meta)))

    def ln_params(prefix, scale=1.0):
        return {"G": W(prefix + ".weight") * scale, "BY": W(prefix + ".bias") * scale} if have else {}

    # ---------------- encoder + input LIF ----------------
    a_in = lif("input_lif", D, "input", 0)
    if have:
        Em = W("encoder.embed.weight") @ W("encoder.temporal_proj.weight").T
        fast = _sigmoid(W("encoder.fast_basis")) * float(W("encoder.drive_scale"))
        slow = _sigmoid(W("encoder.slow_basis")) * float(W("encoder.slow_scale"))
        enc = {"E": f32(Em), "G": np.concatenate([fast, slow], 0) * a_in}
    else:
        enc = {}
    host("encoder", "nord_encoder", ["ids"], ["drive"], enc, stage="input", target="input_lif")
    g.stages.append(Stage("input", K, "encoder", ["input_lif"], ["input_lif"], "input_lif", "input.res",
                          drive_per_frame=True, readouts=["input_lif"]))
    host("input.res", "nord_spike_residual", ["S"], ["X"], stage="input")
    g.program += ["encoder", "input", "input.res"]

    # ---------------- memory cortex ----------------
    def memory():
        mc = "memory_cortex"
        st = mc
        host(f"{mc}.in", "nord4_payload", ["X"], ["Y"], stage=st)
        a_m = lif(f"{mc}.memory_lif", M, st, 1, emit_v=True)
        a_g = lif(f"{mc}.gate_lif", M, st, 1)
        syn(f"{mc}.to_memory", f"host:{mc}.in", f"{mc}.memory_lif",
            W(f"{mc}.to_memory.weight") * a_m if have else None, (M, D))
        syn(f"{mc}.gate_proj", f"host:{mc}.in", f"{mc}.gate_lif",
            W(f"{mc}.gate_proj.weight") * a_g if have else None, (M, D))
        g.stages.append(Stage(st, K, f"{mc}.in", [], [f"{mc}.memory_lif", f"{mc}.gate_lif"], f"{mc}.gate_lif",
                              f"{mc}.read", drive_per_frame=True, readouts=[f"{mc}.memory_lif", f"{mc}.gate_lif"]))
        if have:
            hd = M // Hr
            RQ, RK = W(f"{mc}.read_query"), W(f"{mc}.read_key_proj.weight")       # [Hr, hd], [M, M]
            WA = np.einsum("hd,hdm->hm", RQ, RK.reshape(Hr, hd, M)) * hd ** -0.5   # a = WA·v (per head)
            mix = float(_sigmoid(W(f"{mc}.memory_mix")))
            par = {"WA": WA, "GTH": np.array([float(W(f"{mc}.gate_threshold"))]),
                   "WF": W(f"{mc}.from_memory.weight"), **ln_params(f"{mc}.mem_norm", mix)}
        else:
            par = {}
        host(f"{mc}.read", "nord4_memory", ["X", "S", "V"], ["X"], par, stage=st, heads=Hr,
             mem=f"{mc}.memory_lif", gate=f"{mc}.gate_lif")
        g.program += [f"{mc}.in", st, f"{mc}.read"]

    # ---------------- blocks ----------------
    mem_done = False
    for l, (comp, p) in enumerate(blocks):
        if comp == "executive" and not mem_done:
            memory()
            mem_done = True
        st = f"{p}.qk"
        r = f"{p}.resonance"
        nq, nk = f"{r}.lif_q", f"{r}.lif_k"
        host(f"{p}.norm1", "nord_layernorm", ["X"], ["Y"], ln_params(f"{p}.norm1"), stage=st, layer=l)
        a_q = lif(nq, D, st, 1)
        a_k = lif(nk, D, st, 1)
        syn(f"{r}.W_q", f"host:{p}.norm1", nq, W(f"{r}.W_q.weight") * a_q if have else None, (D, D))
        syn(f"{r}.W_k", f"host:{p}.norm1", nk, W(f"{r}.W_k.weight") * a_k if have else None, (D, D))
        g.stages.append(Stage(st, K, f"{p}.norm1", [], [nq, nk], nk, f"{p}.attn", drive_per_frame=True,
                              readouts=[nq, nk]))
        if have:
            cos, sin = rope_tables(cfg, sd, p, "cpu")
            att = {"WV": W(f"{r}.W_v.weight") / K,
                   "WO": W(f"{p}.gamma_attn")[:, None] * W(f"{r}.W_o.weight"),
                   "WQ": _np(torch.softmax(sd[f"{r}.temporal_mix_q"].double(), 0)),
                   "WK": _np(torch.softmax(sd[f"{r}.temporal_mix_k"].double(), 0)),
                   "COS": _np(cos), "SIN": _np(sin), "TEMP": np.array([float(W(f"{r}.resonance_temp"))])}
        else:
            att = {}
        host(f"{p}.attn", "nord4_attention", ["X", "Y", "SQ", "SK"], ["X"], att, stage=st, layer=l,
             heads=H, top_k=cfg.resonance_top_k, sdpa=sdpa, q=nq, k=nk, norm=f"{p}.norm1")
        g.program += [f"{p}.norm1", st, f"{p}.attn"]

        if have:
            res = {"GF": W(f"{p}.gamma_ffn")}
            if comp != "executive":
                res.update({"LEAK": _sigmoid(W(f"{p}.clamp.leak_raw")), "FLOOR": W(f"{p}.clamp.floor")})
        else:
            res = {}
        relu = comp == "executive"
        if comp == "association":
            m = f"{p}.moe"
            sr = f"{m}.route"
            host(f"{p}.norm2", "nord_layernorm", ["X"], ["Y"], ln_params(f"{p}.norm2"), stage=sr, layer=l)
            rl = f"{m}.route_lif"
            a_r = lif(rl, D, sr, 1)
            syn(f"{m}.route_in", f"host:{p}.norm2", rl, np.eye(D) * a_r if have else None, (D, D))
            g.stages.append(Stage(sr, K, f"{p}.norm2", [], [rl], rl, f"{m}.gate", drive_per_frame=True,
                                  readouts=[rl]))
            if have:
                rp = make_lif(sd, rl, cfg)
                cid = _np(rp.cluster_ids).astype(np.int64)
                # score_e = Σ_t Σ_{j: c(j) in expert e} s_t,j · A + bias_e,
                # A = 1 / (K · ⌊D/nc⌋ · (nc/E) · max(temp, 0.01)); expert of neuron j = c(j) // (nc/E)
                A = 1.0 / (K * rp.n_per_cluster * (nc // E) * max(float(cfg.moe_route_temperature), 0.01))
                gate = {"EXPERT": cid // (nc // E), "A": np.array([A]), "BIAS": W(f"{m}.expert_bias")}
            else:
                gate = {}
            host(f"{m}.gate", "nord4_moe_gate", ["S", "Y"], ["drive"], gate, stage=sr, layer=l, experts=E,
                 top_k=kx, norm=f"{p}.norm2")
            se = f"{m}.experts"
            n1, n2 = f"{m}.expert_group.lif1", f"{m}.expert_group.lif2"
            a1 = lif(n1, ef, se, 1, copies=E)
            a2 = lif(n2, D, se, 2, copies=E)
            if have:
                up = np.zeros((E * ef, E * D))
                down = np.zeros((E * D, E * ef))
                for e in range(E):
                    up[e * ef:(e + 1) * ef, e * D:(e + 1) * D] = W(f"{m}.expert_group.up.{e}.weight") * a1
                    down[e * D:(e + 1) * D, e * ef:(e + 1) * ef] = W(f"{m}.expert_group.down.{e}.weight") * a2
            else:
                up = down = None
            syn(f"{m}.expert_group.up", f"host:{m}.gate", n1, up, (E * ef, E * D))
            syn(f"{m}.expert_group.down", n1, n2, down, (E * D, E * ef), kind="binary")
            g.stages.append(Stage(se, K, f"{m}.gate", [], [n1, n2], n2, f"{p}.ffn_res", drive_per_frame=True,
                                  readouts=[n2]))
            host(f"{p}.ffn_res", "nord4_moe_residual", ["X", "S"], ["X"], res, stage=se, layer=l, experts=E,
                 gate=f"{m}.gate")
            g.program += [f"{p}.norm2", sr, f"{m}.gate", se, f"{p}.ffn_res"]
        else:
            st = f"{p}.ffn"
            n1, n2 = f"{p}.ffn.lif1", f"{p}.ffn.lif2"
            host(f"{p}.norm2", "nord_layernorm", ["X"], ["Y"], ln_params(f"{p}.norm2"), stage=st, layer=l)
            a1 = lif(n1, F, st, 1)
            a2 = lif(n2, D, st, 2)
            syn(f"{p}.ffn.up", f"host:{p}.norm2", n1, W(f"{p}.ffn.up.weight") * a1 if have else None, (F, D))
            syn(f"{p}.ffn.down", n1, n2, W(f"{p}.ffn.down.weight") * a2 if have else None, (D, F), kind="binary")
            g.stages.append(Stage(st, K, f"{p}.norm2", [], [n1, n2], n2, f"{p}.ffn_res", drive_per_frame=True,
                                  readouts=[n2]))
            host(f"{p}.ffn_res", "nord_ffn_residual", ["X", "S"], ["X"], res, stage=st, layer=l, relu=relu)
            g.program += [f"{p}.norm2", st, f"{p}.ffn_res"]
    if not mem_done:
        memory()

    # ---------------- readout ----------------
    a_ro = lif("readout_lif", D, "readout", 0, emit_v=True)
    host("readout.drive", "nord_gain_drive", ["X"], ["drive"], {"G": np.full(D, a_ro)} if have else {},
         stage="readout", target="readout_lif")
    g.stages.append(Stage("readout", K, "readout.drive", ["readout_lif"], ["readout_lif"], "readout_lif",
                          "readout.ema", drive_per_frame=True, readouts=["readout_lif"]))
    if have:
        ro = {"A": np.array([float(_sigmoid(W("readout_ema_raw")))]), **ln_params("readout_norm")}
        head = {"W": f32(W("lm_head.weight"))}
    else:
        ro, head = {}, {}
    host("readout.ema", "nord_readout", ["S", "V"], ["Y"], ro, stage="readout")
    host("lm_head", "nord_lm_head", ["Y"], ["logits"], head)
    host("sample", "sample", ["logits"], ["ids"])
    g.program += ["readout.drive", "readout", "readout.ema", "lm_head", "sample"]
    assert len(set(g.program)) == len(g.program)
    g.validate()
    return g
