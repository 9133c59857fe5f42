"""`inspect` for NeuronSpark-V1: everything derived from the config alone (spec §3.9, §7, §8)."""
from __future__ import annotations

from ns_compile.models.neuronspark.config import NSConfig
from ns_compile.models.neuronspark.reference import state_floats
from ns_compile.models.neuronspark.shapes import parameter_counts

NEUROMORPHIC = "neuromorphic"
HOST = "host"


def neuron_populations(cfg: NSConfig) -> list[dict]:
    """Neuron populations of one layer (then the model-level output neuron)."""
    D, DN, F = cfg.D, cfg.DN, cfg.D_ff
    return [
        {"name": "input_neuron1", "model": "PLIF_A (static β, θ; soft reset; leak output)", "count": D},
        {"name": "snn_block.hidden", "model": "PLIF_B (selective: β(t)=σ, α(t)=softplus, θ(t)=v_th_min+|·|; "
                                              "output V_post)", "count": DN},
        {"name": "input_neuron2", "model": "PLIF_A", "count": D},
        {"name": "snn_ffn.gate_neuron", "model": "PLIF_A", "count": F},
        {"name": "snn_ffn.up_neuron", "model": "PLIF_A", "count": F},
    ]


def synapse_groups(cfg: NSConfig) -> list[dict]:
    """Dense graded synapse groups of one layer: (name, fan-in, fan-out, rate)."""
    D, DN, F = cfg.D, cfg.DN, cfg.D_ff
    groups = [
        ("snn_block.W_in", D, DN, "frame"), ("snn_block.W_beta_x", D, DN, "frame"),
        ("snn_block.W_alpha_x", D, DN, "frame"), ("snn_block.W_th_x", D, DN, "frame"),
        ("snn_block.W_gate", D, D, "frame"), ("snn_block.W_skip", D, D, "frame"),
        ("snn_block.W_out", DN, D, "frame"), ("block_halt", D, 1, "frame"),
        ("block_out_proj", D, D, "token"),
        ("snn_ffn.gate_proj", D, F, "frame"), ("snn_ffn.up_proj", D, F, "frame"),
        ("snn_ffn.down_proj", F, D, "frame"), ("snn_ffn.skip_proj", D, D, "frame"),
        ("ffn_halt", D, 1, "frame"), ("ffn_out_proj", D, D, "token"),
    ]
    return [{"name": n, "in": i, "out": o, "synapses": i * o, "rate": r} for n, i, o, r in groups]


def operations(cfg: NSConfig) -> list[dict]:
    """Which ops map onto neuromorphic cores and which stay on the host (spec §7.2)."""
    return [
        {"op": "PLIF_A neurons (input ×2, FFN gate/up, output)", "placement": NEUROMORPHIC, "rate": "frame",
         "note": "custom neuron: per-neuron β, subtractive reset, ≥ threshold, graded leak output"},
        {"op": "selective PLIF_B neurons incl. σ/softplus/|·| modulation", "placement": NEUROMORPHIC,
         "rate": "frame", "note": "custom neuron with 4 graded inputs (I, β-, α-, θ-pre) and in-neuron products"},
        {"op": "dense synapse groups (W_in, W_*_x, W_gate, W_skip, W_out, FFN projections, halt dots)",
         "placement": NEUROMORPHIC, "rate": "frame", "note": "graded messages every frame; needs quantization"},
        {"op": "products gate⊙readout and gate_leak⊙up_leak", "placement": NEUROMORPHIC, "rate": "frame",
         "note": "product neurons (two graded inputs)"},
        {"op": "out_proj ×2 per layer (centering folded in)", "placement": NEUROMORPHIC, "rate": "token",
         "note": "dense synapses, once per token"},
        {"op": "uniform K-mean of the output neuron", "placement": NEUROMORPHIC, "rate": "token",
         "note": "accumulator with weight (1-β)/K"},
        {"op": "embedding lookup", "placement": HOST, "rate": "token", "note": ""},
        {"op": "RMSNorm ×2 per layer, output_norm, LateralInhibition", "placement": HOST, "rate": "token",
         "note": "needs the whole vector's mean square"},
        {"op": "PonderNet aggregation (σ, survival products, normalisation, weighted sum)", "placement": HOST,
         "rate": "token", "note": "buffers the K frames of each sublayer"},
        {"op": "residual add", "placement": HOST, "rate": "token", "note": "residual stream is per token"},
        {"op": "decode_proj", "placement": HOST, "rate": "token", "note": ""},
        {"op": "LM head (tied embedding)", "placement": HOST, "rate": "token", "note": ""},
        {"op": "softmax / sampling, tokenizer", "placement": HOST, "rate": "token", "note": ""},
    ]


def describe(cfg: NSConfig) -> dict:
    L, K, D, V = cfg.num_layers, cfg.K, cfg.D, cfg.vocab_size
    params = parameter_counts(cfg)
    pops = neuron_populations(cfg)
    per_layer_neurons = sum(p["count"] for p in pops)
    groups = synapse_groups(cfg)
    per_frame_syn = sum(g["synapses"] for g in groups if g["rate"] == "frame")
    per_token_syn = sum(g["synapses"] for g in groups if g["rate"] == "token")
    macs_per_token = L * (K * per_frame_syn + per_token_syn) + D * D + V * D
    floats = state_floats(cfg)
    return {
        "family": "neuronspark",
        "architecture": {
            "name": "NeuronSpark-V1 (SNNLanguageModel)",
            **cfg.sizes(),
            "v_th_min_source": "default" if cfg.v_th_min_defaulted else "config",
            "DN": cfg.DN,
            "frames_per_token": K,
            "input_encoding": f"embedding repeated on all {K} frames (continuous values, no positions)",
            "head": "tied to embed_tokens.weight",
        },
        "parameters": params,
        "neurons": {
            "per_layer": {p["name"]: p["count"] for p in pops} | {"total": per_layer_neurons},
            "output_neuron": D,
            "total": L * per_layer_neurons + D,
            "updates_per_token": (L * per_layer_neurons + D) * K,
            "models": {p["name"]: p["model"] for p in pops} | {"output_neuron": "PLIF_A"},
        },
        "synapses": {
            "per_layer": groups,
            "per_layer_total": per_frame_syn + per_token_syn,
            "total": L * (per_frame_syn + per_token_syn),
            "macs_per_frame_per_layer": per_frame_syn,
            "macs_per_token": macs_per_token,
        },
        "state": {
            "per_layer": {"input_neuron1": D, "snn_block.hidden": cfg.DN, "input_neuron2": D,
                          "snn_ffn.gate_neuron": cfg.D_ff, "snn_ffn.up_neuron": cfg.D_ff,
                          "total": 2 * D + cfg.DN + 2 * cfg.D_ff},
            "output_neuron": D,
            "floats_per_sequence": floats,
            "bytes_fp32": 4 * floats,
            "note": "membrane potentials carried across tokens; independent of sequence length",
        },
        "ops": operations(cfg),
    }


def _n(x: int) -> str:
    return f"{x:,}"


def format_text(info: dict) -> str:
    a, p, n, s, st = info["architecture"], info["parameters"], info["neurons"], info["synapses"], info["state"]
    out = []
    w = out.append
    w(f"{a['name']}  —  checkpoint: {info.get('checkpoint', '?')}")
    w(f"  weights: {info.get('weights', '?')}")
    w(f"  vocab {a['vocab_size']}, D {a['D']}, N {a['N']} (DN {a['DN']}), K {a['K']} frames/token, "
      f"{a['num_layers']} layers, D_ff {a['D_ff']}, v_th_min {a['v_th_min']}"
      + (" (default)" if a["v_th_min_source"] == "default" else ""))
    w(f"  input: {a['input_encoding']}; head: {a['head']}")
    w("")
    w("Parameters")
    rows = [("SNNBlock (per layer)", p["per_layer"]["snn_block"]),
            ("SNNFFN (per layer)", p["per_layer"]["snn_ffn"]),
            ("out_proj ×2 (per layer)", p["per_layer"]["out_proj"]),
            ("norms, input PLIFs, halts (per layer)", p["per_layer"]["other"]),
            ("layer total", p["per_layer"]["total"])]
    rows += [(f"{k} (top level)", v) for k, v in p["top_level"].items() if k != "total"]
    rows += [(f"group {k}", v) for k, v in p["by_group"].items()]
    rows += [("TOTAL", p["total"]), ("tensors", p["tensors"]), ("bytes in fp32", p["bytes_fp32"])]
    width = max(len(r[0]) for r in rows)
    for name, v in rows:
        w(f"  {name:<{width}}  {_n(v):>15}")
    w("")
    w("Neurons per layer")
    for name, c in n["per_layer"].items():
        model = n["models"].get(name, "")
        w(f"  {name:<22} {_n(c):>12}  {model}")
    w(f"  output_neuron (model) {_n(n['output_neuron']):>11}")
    w(f"  total {_n(n['total'])} neurons, {_n(n['updates_per_token'])} neuron updates per token")
    w("")
    w("Synapse groups per layer (dense, graded)")
    for g in s["per_layer"]:
        w(f"  {g['name']:<22} {g['in']:>6} -> {g['out']:<6} {_n(g['synapses']):>14}  per {g['rate']}")
    w(f"  per layer {_n(s['per_layer_total'])}, model {_n(s['total'])}; "
      f"{_n(s['macs_per_frame_per_layer'])} MAC/frame/layer, {_n(s['macs_per_token'])} MAC/token")
    w("")
    w(f"Membrane state carried per sequence: {_n(st['floats_per_sequence'])} floats "
      f"({_n(st['bytes_fp32'])} bytes fp32), {_n(st['per_layer']['total'])} per layer + "
      f"{_n(st['output_neuron'])} output neuron; independent of length")
    w("")
    w("Placement")
    for place in (NEUROMORPHIC, HOST):
        w(f"  {place}:")
        for o in info["ops"]:
            if o["placement"] == place:
                note = f"  ({o['note']})" if o["note"] else ""
                w(f"    - {o['op']} [per {o['rate']}]{note}")
    return "\n".join(out)
