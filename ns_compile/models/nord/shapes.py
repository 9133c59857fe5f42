"""State-dict layout of Nord v3 / v4.2 derived from the config alone (nord.md §1.1, §2.3).

`param_shapes(cfg)` lists every trainable parameter (these are what parameter counts add up),
`buffer_shapes(cfg)` the buffers. Both keep the upstream key order, grouped by component, so
`inspect` can count per component from shapes alone.
"""
from __future__ import annotations

from collections import OrderedDict

LIF_PARAM_SUFFIXES = ("threshold", "beta_mem_raw", "beta_syn_raw", "neighbor_weights", "cluster_gain")


def lif_params(prefix: str, d: int, nc: int, v4: bool) -> list[tuple[str, tuple]]:
    th = "threshold_raw" if v4 else "threshold"
    return [
        (f"{prefix}.{th}", (d,)),
        (f"{prefix}.beta_mem_raw", ()),
        (f"{prefix}.beta_syn_raw", ()),
        (f"{prefix}.neighbor_weights", (nc, nc)),
        (f"{prefix}.cluster_gain", (nc,)),
    ]


def lif_buffers(prefix: str, d: int, v4: bool) -> list[tuple[str, tuple, bool]]:
    """(key, shape, required). cluster_ids is recomputable (j mod nc), so not required."""
    out = [(f"{prefix}.cluster_ids", (d,), False)]
    if v4:
        out += [(f"{prefix}._firing_rate_ema", (d,), False), (f"{prefix}._step_counter", (), False)]
    return out


def block_names(cfg) -> list[tuple[str, str]]:
    """[(component, key prefix)] of every block, in forward order."""
    if cfg.version == "v3":
        return [("blocks", f"blocks.{l}") for l in range(cfg.n_layers)]
    out = [("sensory", f"sensory_blocks.{i}") for i in range(cfg.sensory_layers)]
    out += [("association", f"association_blocks.{i}") for i in range(cfg.association_layers)]
    out += [("executive", f"executive_blocks.{i}") for i in range(cfg.executive_layers)]
    return out


def lif_populations(cfg) -> list[tuple[str, str, int]]:
    """[(component, LIF key prefix, neurons)] of every LIF population, in forward order."""
    D, F, v4 = cfg.d_model, cfg.d_ff, cfg.version == "v4"
    out = [("input_lif", "input_lif", D)]
    mem_done = False
    for comp, p in block_names(cfg):
        if comp == "executive" and not mem_done:
            out += _memory_pops(cfg)
            mem_done = True
        out += [(comp, f"{p}.resonance.lif_q", D), (comp, f"{p}.resonance.lif_k", D)]
        if comp == "association":
            ef = F // cfg.n_experts
            out += [(comp, f"{p}.moe.route_lif", D), (comp, f"{p}.moe.expert_group.lif1", ef),
                    (comp, f"{p}.moe.expert_group.lif2", D)]
        else:
            out += [(comp, f"{p}.ffn.lif1", F), (comp, f"{p}.ffn.lif2", D)]
    if v4 and not mem_done:
        out += _memory_pops(cfg)
    out.append(("readout", "readout_lif", D))
    return out


def _memory_pops(cfg):
    M = cfg.memory_size
    return [("memory", "memory_cortex.memory_lif", M), ("memory", "memory_cortex.gate_lif", M)]


def param_shapes(cfg) -> "OrderedDict[str, tuple[str, tuple]]":
    """key -> (component, shape) of every trainable parameter."""
    D, F, V, nc = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_clusters
    T, Ts = cfg.T, cfg.T_slow
    v4 = cfg.version == "v4"
    out: "OrderedDict[str, tuple[str, tuple]]" = OrderedDict()

    def add(comp, items):
        for k, s in items:
            out[k] = (comp, tuple(s))

    add("encoder", [("encoder.embed.weight", (V, D)), ("encoder.temporal_proj.weight", (D, D)),
                    ("encoder.drive_scale", ()), ("encoder.fast_basis", (T, D)),
                    ("encoder.slow_basis", (Ts, D)), ("encoder.slow_scale", ())])
    add("input_lif", lif_params("input_lif", D, nc, v4))
    mem_done = False
    for comp, p in block_names(cfg):
        if v4 and comp == "executive" and not mem_done:
            _memory_params(cfg, add)
            mem_done = True
        items = [(f"{p}.norm1.weight", (D,)), (f"{p}.norm1.bias", (D,)),
                 (f"{p}.norm2.weight", (D,)), (f"{p}.norm2.bias", (D,))]
        items += [(f"{p}.resonance.{w}.weight", (D, D)) for w in ("W_q", "W_k", "W_v", "W_o")]
        items += lif_params(f"{p}.resonance.lif_q", D, nc, v4)
        items += lif_params(f"{p}.resonance.lif_k", D, nc, v4)
        items.append((f"{p}.resonance.resonance_temp", ()))
        if v4:
            Tt = cfg.T_total
            items += [(f"{p}.resonance.temporal_mix_q", (Tt,)), (f"{p}.resonance.temporal_mix_k", (Tt,))]
        if comp == "association":
            E = cfg.n_experts
            ef = F // E
            items.append((f"{p}.moe.expert_bias", (E,)))
            items += lif_params(f"{p}.moe.route_lif", D, nc, v4)
            items += [(f"{p}.moe.expert_group.up.{e}.weight", (ef, D)) for e in range(E)]
            items += [(f"{p}.moe.expert_group.down.{e}.weight", (D, ef)) for e in range(E)]
            items += lif_params(f"{p}.moe.expert_group.lif1", ef, nc, v4)
            items += lif_params(f"{p}.moe.expert_group.lif2", D, nc, v4)
        else:
            items += [(f"{p}.ffn.up.weight", (F, D)), (f"{p}.ffn.down.weight", (D, F))]
            items += lif_params(f"{p}.ffn.lif1", F, nc, v4)
            items += lif_params(f"{p}.ffn.lif2", D, nc, v4)
        items += [(f"{p}.gamma_attn", (D,)), (f"{p}.gamma_ffn", (D,)),
                  (f"{p}.clamp.floor", (D,)), (f"{p}.clamp.leak_raw", (D,))]
        add(comp, items)
    if v4 and not mem_done:
        _memory_params(cfg, add)
    add("readout", lif_params("readout_lif", D, nc, v4))
    add("readout", [("readout_ema_raw", ()), ("readout_norm.weight", (D,)), ("readout_norm.bias", (D,))])
    add("lm_head", [("lm_head.weight", (V, D))])
    return out


def _memory_params(cfg, add):
    D, M, Hr, nc = cfg.d_model, cfg.memory_size, cfg.memory_n_read_heads, cfg.n_clusters
    items = [("memory_cortex.to_memory.weight", (M, D)), ("memory_cortex.from_memory.weight", (D, M)),
             ("memory_cortex.gate_proj.weight", (M, D))]
    items += lif_params("memory_cortex.memory_lif", M, nc, True)
    items += lif_params("memory_cortex.gate_lif", M, nc, True)
    items += [("memory_cortex.gate_threshold", ()), ("memory_cortex.read_query", (Hr, M // Hr)),
              ("memory_cortex.read_key_proj.weight", (M, M)), ("memory_cortex.mem_norm.weight", (D,)),
              ("memory_cortex.mem_norm.bias", (D,)), ("memory_cortex.memory_mix", ())]
    add("memory", items)


def buffer_shapes(cfg, *, rope_rows: int | None = None) -> "OrderedDict[str, tuple[tuple, bool]]":
    """key -> (shape, required) of the buffers we know (persistent state excluded)."""
    v4 = cfg.version == "v4"
    out: "OrderedDict[str, tuple[tuple, bool]]" = OrderedDict()
    for _comp, p, d in lif_populations(cfg):
        for k, s, req in lif_buffers(p, d, v4):
            out[k] = (s, req)
    if v4:
        half = cfg.head_dim // 2
        rows = cfg.max_seq_len if rope_rows is None else rope_rows
        for comp, p in block_names(cfg):
            out[f"{p}.resonance.rope.inv_freq"] = ((half,), False)
            out[f"{p}.resonance.rope.cos_cached"] = ((rows, half), False)
            out[f"{p}.resonance.rope.sin_cached"] = ((rows, half), False)
            if comp == "association":
                out[f"{p}.moe.expert_counts_ema"] = ((cfg.n_experts,), False)
        out["_osc_step"] = ((), False)
    return out


def is_state_key(key: str) -> bool:
    return key.endswith("._v_mem_state") or key.endswith("._i_syn_state")
