"""A small random NeuronSpark-V1 checkpoint of our own (HF layout, no tokenizer)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_random_checkpoint(dst: Path, *, seed: int = 0, D: int = 16, N: int = 2, K: int = 4, layers: int = 2,
                           D_ff: int = 32, vocab: int = 64) -> Path:
    from safetensors.numpy import save_file

    from ns_compile.models.neuronspark.config import NSConfig
    from ns_compile.models.neuronspark.shapes import HF_PREFIX, shape_table

    cfg_d = {"model_type": "neuronspark", "vocab_size": vocab, "D": D, "N": N, "K": K, "num_layers": layers,
             "D_ff": D_ff, "v_th_min": 0.1}
    cfg = NSConfig.from_dict(cfg_d, "config")
    rng = np.random.default_rng(seed)
    t = {}
    for key, shape in shape_table(cfg).items():
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) == 2:                                   # matrices: N(0, 1/fan_in)
            x = rng.normal(0, 1 / np.sqrt(shape[1]), shape)
            if key == "embed_tokens.weight":
                x = rng.normal(0, 1, shape)
        elif key.endswith("norm.weight") or key == "norm.gain":
            x = 1 + 0.1 * rng.normal(size=shape)
        elif leaf == "w":                                     # β = σ(w) around 0.5..0.9
            x = rng.normal(1.0, 0.8, shape)
        elif leaf == "v_th":
            x = rng.uniform(0.05, 0.4, shape)
        elif leaf == "b_beta":
            x = rng.normal(1.5, 0.5, shape)
        elif leaf == "b_alpha":
            x = rng.normal(0.0, 0.5, shape)
        elif leaf == "b_th":
            x = rng.normal(0.0, 0.1, shape)
        else:                                                 # halt weights/biases, decode bias
            x = 0.1 * rng.normal(size=shape)
        t[HF_PREFIX + key] = np.ascontiguousarray(x, dtype=np.float32)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg_d))
    save_file(t, str(dst / "model.safetensors"))
    return dst
