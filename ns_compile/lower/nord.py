"""Nord v3 → float IR (docs/fixed_point.md §7, spec shared/research/nord.md §1.2, §3).

Per token (one position of one row; rows are independent, LIF state fresh each token):

  encoder (host)            ids → per-frame drive [K, B, D] of input_lif (embed·W_tpᵀ folded, gains · (1−β_mem))
  stage "input"             input_lif (lif_nord) ─cascade→ itself;  spikes → host
  input.res (host)          X = spikes (the residual stream, per frame)
  per block l:
    blocks.l.norm1 (host)   Y = LN₁(X) per frame: the payload of the host-fed groups W_q, W_k
    stage "blocks.l.qk"     host:norm1 ─W_q→ lif_q,  host:norm1 ─W_k→ lif_k  (graded);  spikes → host
    blocks.l.attn (host)    co-firing counts, causal mask, top-k (lowest index), softmax, V-mean, W_o·γ_attn, X += O
    blocks.l.norm2 (host)   Z = LN₂(X) per frame
    stage "blocks.l.ffn"    host:norm2 ─W_up→ lif1 (graded) ─W_down→ lif2 (BINARY spikes);  lif2 spikes → host
    blocks.l.ffn_res (host) X += γ_ffn·s2;  LeakyClamp
  readout.drive (host)      (1−β_mem)·X per frame → readout_lif (emit_v: spikes and membrane to the host)
  readout.ema (host)        EMA of v + spike mean → readout LayerNorm → lm_head → sample

Folding: (1 − β_mem) of every lif_nord into the rows of its incoming groups / its host drive (so its
state U is Lava's CUBA u); β_syn·(1 − β_mem)·g·σ(N)/⌊d/nc⌋ into the dense cascade group; γ_attn into
W_o; 1/K into W_v. Nothing dynamic is folded.

Nord v4.2 lowers through `ns_compile.lower.nord_v4.lower_nord_v4` (dispatched by `lower_handle`).
"""
from __future__ import annotations

import math

import numpy as np

from ns_compile.errors import UserError
from ns_compile.ir import Graph, HostOp, Population, Stage, Synapse

LN_EPS = 1e-5


def _np(t):
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").double().numpy()
    return np.asarray(t, dtype=np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def cascade_matrix(coupling: np.ndarray, gain: np.ndarray, cluster_ids: np.ndarray, d: int, scale: float) -> np.ndarray:
    """Dense cascade weights Wc[k, j] = scale · g[c(k)] · σ(N)[c(k), c(j)] / ⌊d/nc⌋ (coupling = σ(N))."""
    nc = int(coupling.shape[0])
    c = np.asarray(cluster_ids, dtype=np.int64)
    n_per = d // nc
    return scale * gain[c][:, None] * coupling[c][:, c] / n_per


def lower_nord(cfg, sd: dict | None) -> Graph:
    """cfg: NordV3Config; sd: the validated state dict (torch tensors) or None (shape-only graph)."""
    if getattr(cfg, "version", "v3") != "v3":
        what = "compile" if sd is not None else "plan"
        raise UserError(f"Nord v4 lowering is not supported yet, so `{what}` cannot handle this v4 checkpoint "
                        "(only Nord v3 lowers); inspect, logits and generate work for v4")
    D, F, L, V, H = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size, cfg.n_heads
    K = cfg.T + cfg.T_slow
    nc = cfg.n_clusters
    have = sd is not None

    def W(key):
        return _np(sd[key]) if have else None

    def f32(x):
        return None if x is None else np.ascontiguousarray(x, dtype=np.float32)

    config = {"D": D, "d_ff": F, "n_layers": L, "vocab_size": V, "n_heads": H, "K": K, "T": cfg.T,
              "T_slow": cfg.T_slow, "n_clusters": nc, "resonance_top_k": cfg.resonance_top_k,
              "max_seq_len": cfg.max_seq_len, "v_reset": cfg.v_reset, "refractory_t": cfg.refractory_t,
              "eps": LN_EPS, "version": "v3"}
    g = Graph(family="nord", config=config)
    g.meta["frames"] = K
    g.meta["shape_only"] = not have

    lifs: dict[str, dict] = {}

    def lif(name, size, stage, depth, emit_v=False):
        """A lif_nord population + its cascade group; returns (1 − β_mem) for folding."""
        if have:
            bm = float(_sigmoid(W(name + ".beta_mem_raw")))
            bs = float(_sigmoid(W(name + ".beta_syn_raw")))
            theta = W(name + ".threshold")
            coup = _sigmoid(W(name + ".neighbor_weights"))
            gain = W(name + ".cluster_gain")
            cid = W(name + ".cluster_ids") if (name + ".cluster_ids") in sd else np.arange(size) % nc
            params = {"BS": np.array([bs]), "BM": np.array([bm]), "TH": theta,
                      "VRESET": np.array([float(cfg.v_reset)]), "RT": np.array([int(cfg.refractory_t)], dtype=np.int64)}
            wc = cascade_matrix(coup, gain, cid, size, (1.0 - bm) * bs)
        else:
            bm, params, wc = None, {}, None
        meta = {"binary": True}
        if emit_v:
            meta["emit_v"] = True
        g.add_population(Population(name, "lif_nord", size, stage, params=params, depth=depth, meta=meta))
        s = Synapse(f"{name}.cascade", name, name, "C", f32(wc), input_kind="binary", shape=(size, size))
        s.meta.update({"recurrent": True, "delay": 0, "cascade": True})
        g.add_synapse(s)
        lifs[name] = {"a": None if bm is None else 1.0 - bm}
        return None if bm is None else 1.0 - bm

    def syn(name, src, dst, w, shape, kind="graded", delay=0):
        s = Synapse(name, src, dst, "I", f32(w), input_kind=kind, shape=tuple(shape))
        s.meta["delay"] = delay
        return g.add_synapse(s)

    def host(name, kind, inputs, outputs, params=None, **meta):
        return g.add_host_op(HostOp(name, kind, list(inputs), list(outputs), params=params or {}, meta=dict(meta)))

    def ln_params(prefix):
        return {"G": W(prefix + ".weight"), "BY": W(prefix + ".bias")} if have else {}

    # ---------------- encoder + input LIF ----------------
    a_in = lif("input_lif", D, "input", 0)
    if have:
        E = W("encoder.embed.weight") @ W("encoder.temporal_proj.weight").T          # float64 fold
        fast = _sigmoid(W("encoder.fast_basis")) * float(W("encoder.drive_scale"))
        slow = _sigmoid(W("encoder.slow_basis")) * float(W("encoder.slow_scale"))
        gains = np.concatenate([fast, slow], 0) * a_in                                 # [K, D]
        enc = {"E": f32(E), "G": gains}
    else:
        enc = {}
    host("encoder", "nord_encoder", ["ids"], ["drive"], enc, stage="input", target="input_lif")
    g.stages.append(Stage("input", K, "encoder", ["input_lif"], ["input_lif"], "input_lif", "input.res",
                          drive_per_frame=True, readouts=["input_lif"]))
    host("input.res", "nord_spike_residual", ["S"], ["X"], stage="input")
    g.program += ["encoder", "input", "input.res"]

    # ---------------- blocks ----------------
    for l in range(L):
        p = f"blocks.{l}"
        st = f"{p}.qk"
        nq, nk = f"{p}.resonance.lif_q", f"{p}.resonance.lif_k"
        host(f"{p}.norm1", "nord_layernorm", ["X"], ["Y"], ln_params(f"{p}.norm1"), stage=st, layer=l)
        a_q = lif(nq, D, st, 1)
        a_k = lif(nk, D, st, 1)
        syn(f"{p}.resonance.W_q", f"host:{p}.norm1", nq,
            W(f"{p}.resonance.W_q.weight") * a_q if have else None, (D, D))
        syn(f"{p}.resonance.W_k", f"host:{p}.norm1", nk,
            W(f"{p}.resonance.W_k.weight") * a_k if have else None, (D, D))
        g.stages.append(Stage(st, K, f"{p}.norm1", [], [nq, nk], nk, f"{p}.attn", drive_per_frame=True,
                              readouts=[nq, nk]))
        if have:
            tau = float(W(f"{p}.resonance.resonance_temp"))
            att = {"WV": W(f"{p}.resonance.W_v.weight") / K,
                   "WO": W(f"{p}.gamma_attn")[:, None] * W(f"{p}.resonance.W_o.weight"),
                   "TAU": np.array([tau])}
        else:
            att = {}
        host(f"{p}.attn", "nord_attention", ["X", "Y", "SQ", "SK"], ["X"], att, stage=st, layer=l,
             heads=H, top_k=cfg.resonance_top_k, q=nq, k=nk, norm=f"{p}.norm1")
        g.program += [f"{p}.norm1", st, f"{p}.attn"]

        st = f"{p}.ffn"
        n1, n2 = f"{p}.ffn.lif1", f"{p}.ffn.lif2"
        host(f"{p}.norm2", "nord_layernorm", ["X"], ["Y"], ln_params(f"{p}.norm2"), stage=st, layer=l)
        a1 = lif(n1, F, st, 1)
        a2 = lif(n2, D, st, 2)
        syn(f"{p}.ffn.up", f"host:{p}.norm2", n1, W(f"{p}.ffn.up.weight") * a1 if have else None, (F, D))
        syn(f"{p}.ffn.down", n1, n2, W(f"{p}.ffn.down.weight") * a2 if have else None, (D, F), kind="binary")
        g.stages.append(Stage(st, K, f"{p}.norm2", [], [n1, n2], n2, f"{p}.ffn_res", drive_per_frame=True,
                              readouts=[n2]))
        if have:
            res = {"GF": W(f"{p}.gamma_ffn"), "LEAK": _sigmoid(W(f"{p}.clamp.leak_raw")),
                   "FLOOR": W(f"{p}.clamp.floor")}
        else:
            res = {}
        host(f"{p}.ffn_res", "nord_ffn_residual", ["X", "S"], ["X"], res, stage=st, layer=l)
        g.program += [f"{p}.norm2", st, f"{p}.ffn_res"]

    # ---------------- readout ----------------
    a_ro = lif("readout_lif", D, "readout", 0, emit_v=True)
    host("readout.drive", "nord_gain_drive", ["X"], ["drive"], {"G": np.full(D, a_ro)} if have else {},
         stage="readout", target="readout_lif")
    g.stages.append(Stage("readout", K, "readout.drive", ["readout_lif"], ["readout_lif"], "readout_lif",
                          "readout.ema", drive_per_frame=True, readouts=["readout_lif"]))
    if have:
        a = float(_sigmoid(W("readout_ema_raw")))
        ro = {"A": np.array([a]), **ln_params("readout_norm")}
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


def ln_shift(D: int) -> int:
    """s of the integer LayerNorm (docs/fixed_point.md §7.3): Σ U² < 2^62."""
    Lg = max(1, math.ceil(math.log2(D)))
    return max(0, -(-(3 * Lg - 14) // 2))


def ln_frac_r(D: int, f_x: int) -> int:
    """f_R of the integer LayerNorm: min(30, 60 − ⌈3L/2⌉ − (f_X − s))."""
    Lg = max(1, math.ceil(math.log2(D)))
    return min(30, 60 - (-(-3 * Lg // 2)) - (f_x - ln_shift(D)))
