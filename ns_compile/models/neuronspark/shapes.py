"""The tensor table of a NeuronSpark-V1 checkpoint, generated from the config (spec §2.2).

One table serves both checkpoint validation (expected key -> shape) and parameter counting
(spec §8), so the two can never disagree. Keys are the SNNLanguageModel state-dict names,
i.e. without the "model." prefix that the HF safetensors file adds.
"""
from __future__ import annotations

import math

from ns_compile.models.neuronspark.config import NSConfig

HF_PREFIX = "model."


def top_level_shapes(cfg: NSConfig) -> dict[str, tuple[int, ...]]:
    V, D = cfg.vocab_size, cfg.D
    return {
        "embed_tokens.weight": (V, D),
        "norm.gain": (D,),
        "decode_proj.weight": (D, D),
        "decode_proj.bias": (D,),
        "output_norm.weight": (D,),
        "output_neuron.w": (D,),
        "output_neuron.v_th": (D,),
    }


def layer_shapes(cfg: NSConfig) -> dict[str, tuple[int, ...]]:
    """Per-layer tensors, keys relative to "layers.{i}."."""
    D, DN, F = cfg.D, cfg.DN, cfg.D_ff
    return {
        "block_norm.weight": (D,),
        "input_neuron1.w": (D,),
        "input_neuron1.v_th": (D,),
        "snn_block.W_in.weight": (DN, D),
        "snn_block.W_beta_x.weight": (DN, D),
        "snn_block.W_alpha_x.weight": (DN, D),
        "snn_block.W_th_x.weight": (DN, D),
        "snn_block.W_gate.weight": (D, D),
        "snn_block.W_skip.weight": (D, D),
        "snn_block.W_out.weight": (D, DN),
        "snn_block.b_beta": (DN,),
        "snn_block.b_alpha": (DN,),
        "snn_block.b_th": (DN,),
        "block_halt.weight": (1, D),
        "block_halt.bias": (1,),
        "block_out_proj.weight": (D, D),
        "ffn_norm.weight": (D,),
        "input_neuron2.w": (D,),
        "input_neuron2.v_th": (D,),
        "snn_ffn.gate_proj.weight": (F, D),
        "snn_ffn.up_proj.weight": (F, D),
        "snn_ffn.down_proj.weight": (D, F),
        "snn_ffn.skip_proj.weight": (D, D),
        "snn_ffn.gate_neuron.w": (F,),
        "snn_ffn.gate_neuron.v_th": (F,),
        "snn_ffn.up_neuron.w": (F,),
        "snn_ffn.up_neuron.v_th": (F,),
        "ffn_halt.weight": (1, D),
        "ffn_halt.bias": (1,),
        "ffn_out_proj.weight": (D, D),
    }


def shape_table(cfg: NSConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model: state-dict key -> shape (607 entries for the 0.9B config)."""
    table = dict(top_level_shapes(cfg))
    per_layer = layer_shapes(cfg)
    for i in range(cfg.num_layers):
        for k, s in per_layer.items():
            table[f"layers.{i}.{k}"] = s
    return table


# ---- parameter counting -----------------------------------------------------------------------

def layer_component(rel_key: str) -> str:
    """Group of a per-layer key, as in spec §8: snn_block, snn_ffn, out_proj or other."""
    if rel_key.startswith("snn_block."):
        return "snn_block"
    if rel_key.startswith("snn_ffn."):
        return "snn_ffn"
    if rel_key.endswith("out_proj.weight"):
        return "out_proj"
    return "other"   # two RMSNorms, two input PLIFs, two halts


def top_component(key: str) -> str:
    return {
        "embed_tokens.weight": "embedding",
        "norm.gain": "lateral_inhibition",
        "decode_proj.weight": "decode_proj",
        "decode_proj.bias": "decode_proj",
        "output_norm.weight": "output_norm",
        "output_neuron.w": "output_neuron",
        "output_neuron.v_th": "output_neuron",
    }[key]


def parameter_counts(cfg: NSConfig) -> dict:
    """Parameters per component, per layer, by group (spec §8) and in total, from shapes alone."""
    per_layer: dict[str, int] = {"snn_block": 0, "snn_ffn": 0, "out_proj": 0, "other": 0}
    for k, s in layer_shapes(cfg).items():
        per_layer[layer_component(k)] += math.prod(s)
    layer_total = sum(per_layer.values())
    top: dict[str, int] = {}
    for k, s in top_level_shapes(cfg).items():
        c = top_component(k)
        top[c] = top.get(c, 0) + math.prod(s)
    top_total = sum(top.values())
    L = cfg.num_layers
    total = L * layer_total + top_total
    by_group = {
        "snn_block": L * per_layer["snn_block"],
        "snn_ffn": L * per_layer["snn_ffn"],
        "out_proj": L * per_layer["out_proj"],
        "embedding": top["embedding"],
        "other": L * per_layer["other"] + top_total - top["embedding"],
    }
    assert sum(by_group.values()) == total == sum(math.prod(s) for s in shape_table(cfg).values())
    return {
        "total": total,
        "tensors": len(shape_table(cfg)),
        "per_layer": dict(per_layer, total=layer_total),
        "top_level": dict(top, total=top_total),
        "by_group": by_group,
        "bytes_fp32": 4 * total,
    }
