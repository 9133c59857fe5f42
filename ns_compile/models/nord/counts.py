"""Shape-only description of a Nord model for `inspect` (nord.md §1.1, §2.7, §3.2-3.3).

Everything here is computed from the config alone, so it works for config-only directories.
Neuron counts are per token position per timestep; multiply by T_total for per-token updates.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from .config import config_to_dict
from .shapes import block_names, lif_populations, param_shapes

ARCH_FIELDS_V3 = ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_seq_len", "T", "T_slow",
                  "n_clusters", "cascade_radius", "resonance_top_k", "v_threshold", "v_reset", "refractory_t",
                  "persistent_mem", "tokenizer_id")
ARCH_FIELDS_V4 = ARCH_FIELDS_V3[:-1] + ("sensory_layers", "association_layers", "executive_layers", "n_experts",
                                        "top_k_experts", "memory_size", "memory_n_read_heads", "memory_tau_mem",
                                        "use_sdpa_attention", "rope_theta", "v_thresh_min", "v_thresh_max",
                                        "tau_mem_min", "tau_mem_max", "tokenizer_id")

# (op, where, note); nord.md §3.2
HOST_OPS_COMMON = [
    ("tokenisation, sampling, repetition penalty, top-k/top-p over the vocabulary", "host", ""),
    ("embedding lookup + temporal_proj", "host", "fold into one table E.W_tp^T (exact)"),
    ("encoder gains (T_total per-channel gain vectors)", "host", "graded current injection per timestep"),
    ("LayerNorm (norm1, norm2, readout_norm)", "host", "no exact on-chip equivalent"),
    ("W_v projection and time-mean V", "host", "V = W_v . mean_t LN1(X) (exact)"),
    ("attention softmax and A.V context", "host", ""),
    ("W_o projection, LayerScale and residual add", "host", "gamma can be folded into W_o / W_down rows"),
    ("EMA readout of the readout membrane + spike mean", "host", "needs the graded membrane v"),
    ("LM head", "host", "too large for the chip"),
]


def _lif_params(d, nc):
    return d + 2 + nc * nc + nc


def populations(cfg) -> list[dict]:
    v4 = cfg.version == "v4"
    out = []
    for comp, name, d in lif_populations(cfg):
        leaf = name.rsplit(".", 1)[-1]
        binary_in = leaf == "lif2"
        if name == "input_lif":
            src = "encoder current (host)"
        elif leaf in ("lif_q", "lif_k"):
            src = f"LN1 -> W_{leaf[-1]} (graded)"
        elif leaf == "lif1":
            src = "LN2 -> W_up (graded)"
        elif leaf == "lif2":
            src = "lif1 spikes -> W_down (binary)"
        elif leaf == "route_lif":
            src = "LN2 output, identity (graded)"
        elif leaf == "memory_lif":
            src = "X -> to_memory (graded)"
        elif leaf == "gate_lif":
            src = "X -> gate_proj (graded)"
        else:
            src = "residual stream, identity (graded)"
        copies = cfg.n_experts if (v4 and ".expert_group." in name) else 1
        active = cfg.top_k_experts if copies > 1 else 1
        persistent = (leaf == "memory_lif") or (cfg.persistent_mem and name in ("input_lif", "readout_lif"))
        out.append({
            "name": name, "component": comp, "neurons": d, "copies": copies, "active_copies": active,
            "input": "binary" if binary_in else "graded", "source": src,
            "emits_membrane": leaf in ("readout_lif", "memory_lif"),
            "persistent_state_upstream": bool(persistent),
            "cascade": {"clusters": cfg.n_clusters, "params": cfg.n_clusters ** 2 + cfg.n_clusters,
                        "dense_equivalent_synapses": d * d},
        })
    return out


def synapses(cfg) -> list[dict]:
    """Feed-forward synapse groups with their input kind and where they naturally live."""
    D, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    v4 = cfg.version == "v4"
    out = [
        {"name": "encoder.embed+temporal_proj", "weights": V * D + D * D, "input": "token id", "where": "host"},
    ]
    mem_done = not v4
    for comp, p in block_names(cfg):
        if comp == "executive" and not mem_done:
            out += _memory_synapses(cfg)
            mem_done = True
        out += [
            {"name": f"{p}.resonance.W_q", "weights": D * D, "input": "graded", "where": "chip (graded spikes) or host"},
            {"name": f"{p}.resonance.W_k", "weights": D * D, "input": "graded", "where": "chip (graded spikes) or host"},
            {"name": f"{p}.resonance.W_v", "weights": D * D, "input": "graded", "where": "host"},
            {"name": f"{p}.resonance.W_o", "weights": D * D, "input": "graded", "where": "host"},
        ]
        if comp == "association":
            E = cfg.n_experts
            ef = F // E
            out += [
                {"name": f"{p}.moe.route_lif (identity)", "weights": D, "input": "graded", "where": "chip"},
                {"name": f"{p}.moe.expert_group.up", "weights": E * ef * D, "input": "graded",
                 "where": "chip (graded spikes) or host", "active_weights": cfg.top_k_experts * ef * D},
                {"name": f"{p}.moe.expert_group.down", "weights": E * D * ef, "input": "binary", "where": "chip",
                 "active_weights": cfg.top_k_experts * D * ef},
            ]
        else:
            out += [
                {"name": f"{p}.ffn.up", "weights": F * D, "input": "graded", "where": "chip (graded spikes) or host"},
                {"name": f"{p}.ffn.down", "weights": D * F, "input": "binary", "where": "chip"},
            ]
    if not mem_done:
        out += _memory_synapses(cfg)
    out += [
        {"name": "readout_lif (identity)", "weights": D, "input": "graded", "where": "chip"},
        {"name": "lm_head", "weights": V * D, "input": "graded", "where": "host"},
    ]
    return out


def _memory_synapses(cfg):
    D, M = cfg.d_model, cfg.memory_size
    return [
        {"name": "memory_cortex.to_memory", "weights": M * D, "input": "graded", "where": "chip (graded spikes) or host"},
        {"name": "memory_cortex.gate_proj", "weights": M * D, "input": "graded", "where": "chip (graded spikes) or host"},
        {"name": "memory_cortex.read_key_proj", "weights": M * M, "input": "graded (membrane)", "where": "host"},
        {"name": "memory_cortex.from_memory", "weights": D * M, "input": "graded", "where": "host"},
    ]


def host_ops(cfg) -> list[dict]:
    ops = list(HOST_OPS_COMMON)
    if cfg.version == "v3":
        ops += [
            ("co-firing scores (count of coincident Q/K spikes per head)", "host or chip",
             "feasible on chip: past K spikes as binary synapses, one counter per key position"),
            (f"top-k over positions (k={cfg.resonance_top_k}, lowest index among ties)", "host", ""),
            ("LeakyClamp on the residual stream", "host", "piecewise-linear graded neuron possible"),
            ("STDP on W_v (chat v3.1, reward-modulated)", "host", "position-averaged residual values, global reward"),
        ]
    else:
        ops += [
            ("temporal mixing + half-split RoPE + real-valued q.k scores", "host", ""),
            ("attention path", "host",
             "SDPA full causal softmax" if cfg.use_sdpa_attention else f"top-k (k={cfg.resonance_top_k}) + softmax"),
            ("LeakyClamp (sensory/association), ReLU (executive)", "host", ""),
            ("MoE routing: cluster-rate pooling, expert scores + bias, top-2, softmax gating", "host (pooling on chip possible)", ""),
            ("memory gate sigmoid(10(g - theta)), read-key projection, softmax over timesteps, mem_norm", "host", ""),
        ]
    return [{"op": o, "where": w, "note": n} for o, w, n in ops]


def describe(cfg) -> dict:
    v4 = cfg.version == "v4"
    counts: "OrderedDict[str, int]" = OrderedDict()
    for _k, (comp, shape) in param_shapes(cfg).items():
        counts[comp] = counts.get(comp, 0) + math.prod(shape)
    total = sum(counts.values())
    per_block = OrderedDict()
    for comp, p in block_names(cfg):
        per_block[p] = sum(math.prod(s) for k, (_c, s) in param_shapes(cfg).items() if k.startswith(p + "."))
    pops = populations(cfg)
    active = sum(p["neurons"] * p["active_copies"] for p in pops)
    physical = sum(p["neurons"] * p["copies"] for p in pops)
    syn = synapses(cfg)
    ff_binary = sum(s["weights"] for s in syn if s["input"] == "binary")
    ff_graded_chip = sum(s["weights"] for s in syn if s["input"] == "graded" and s["where"].startswith("chip"))
    host_w = sum(s["weights"] for s in syn if s["where"] == "host")
    D, T = cfg.d_model, cfg.T_total
    n_attn = len(block_names(cfg))
    if v4:
        cache = {"per_layer_per_position": {"keys (time-mixed, RoPE-rotated, real)": D, "v_mean (real)": D},
                 "layers": n_attn}
    else:
        cache = {"per_layer_per_position": {"K spike bits": T * D, "v_mean (real)": D}, "layers": n_attn}
    arch = ARCH_FIELDS_V4 if v4 else ARCH_FIELDS_V3
    cd = config_to_dict(cfg)
    return {
        "family": "nord",
        "version": "v4.2" if v4 else "v3",
        "architecture": {k: cd[k] for k in arch if k in cd},
        "T_total": T,
        "parameters": {"by_component": dict(counts), "per_block": dict(per_block), "total": total},
        "lif_populations": pops,
        "neurons_per_position_per_timestep": {"active": active, "physical": physical},
        "neuron_updates_per_token": active * T,
        "synapses": syn,
        "synapse_totals": {
            "binary_spike_fed": ff_binary,
            "graded_chip_capable": ff_graded_chip,
            "host_only": host_w,
            "cascade_params": sum(p["cascade"]["params"] for p in pops),
            "cascade_dense_equivalent": sum(p["cascade"]["dense_equivalent_synapses"] * p["copies"] for p in pops),
        },
        "host_ops": host_ops(cfg),
        "state": {
            "generation_cache": cache,
            "persistent_upstream": [p["name"] for p in pops if p["persistent_state_upstream"]],
            "stdp": "v3: W_v of every block changes per token when enabled" if not v4 else "inert (never applied upstream)",
        },
        "custom_neuron_features": ["per-neuron threshold", "subtractive (soft) reset",
                                   f"refractory {cfg.refractory_t} steps clamped to v_reset={cfg.v_reset}",
                                   "v >= theta (inclusive)", "graded membrane output (readout"
                                   + (", memory" if v4 else "") + ")"],
    }


def format_text(info: dict) -> str:
    """Human-readable rendering of `describe()` / `NordHandle.inspect()`."""
    L = []
    a = info["architecture"]
    L.append(f"Nord {info['version']}  ({info.get('path', '')})" + ("  [config only]" if info.get("config_only") else ""))
    L.append("  " + ", ".join(f"{k}={v}" for k, v in a.items()))
    if "attention_path" in info:
        L.append(f"  attention: {info['attention_path']}")
    p = info["parameters"]
    L.append(f"parameters: {p['total']:,}")
    for k, v in p["by_component"].items():
        L.append(f"  {k:<14} {v:>15,}")
    n = info["neurons_per_position_per_timestep"]
    L.append(f"LIF neurons per position per timestep: {n['active']:,} active, {n['physical']:,} physical; "
             f"T_total={info['T_total']} -> {info['neuron_updates_per_token']:,} neuron updates per token")
    for pop in info["lif_populations"]:
        cp = f" x{pop['copies']} ({pop['active_copies']} active)" if pop["copies"] > 1 else ""
        L.append(f"  {pop['name']:<44} {pop['neurons']:>6}{cp}  in: {pop['source']}"
                 + ("  [emits membrane]" if pop["emits_membrane"] else ""))
    st = info["synapse_totals"]
    L.append(f"synapses: {st['binary_spike_fed']:,} binary-spike-fed, {st['graded_chip_capable']:,} graded "
             f"(chip-capable), {st['host_only']:,} host-only; cascade {st['cascade_params']:,} params "
             f"({st['cascade_dense_equivalent']:,} dense-equivalent recurrent synapses)")
    L.append("host-side ops:")
    for o in info["host_ops"]:
        L.append(f"  - {o['op']} [{o['where']}]" + (f": {o['note']}" if o["note"] else ""))
    s = info["state"]
    c = s["generation_cache"]
    L.append(f"state: generation cache per layer per position {c['per_layer_per_position']} x {c['layers']} layers; "
             f"persistent upstream: {', '.join(s['persistent_upstream']) or 'none'}; STDP: {s['stdp']}")
    if "checkpoint" in info:
        L.append(f"checkpoint: {info['checkpoint']}")
    return "\n".join(L)
