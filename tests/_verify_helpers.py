"""Synthetic traces for the verify tests (no model, no artifact needed)."""
from __future__ import annotations

import numpy as np

from ns_compile.verify.trace import Trace

B, T, K = 2, 3, 4
POPS = {  # key: (kind, size, spiking)
    "layers.0.block.input": ("plif_static", 5, True),
    "layers.0.block.hidden": ("plif_selective", 8, True),
    "layers.0.block.readout": ("gated_readout", 5, False),
    "layers.0.ffn.gate": ("plif_static", 6, True),
    "layers.1.block.hidden": ("plif_selective", 8, True),
    "decode.output": ("plif_static", 5, True),
}
FRAC = 10
VOCAB = 7


def make_integer_trace(stage: str = "emulator", seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    t = Trace({"stage": stage, "integer": True, "frames": K, "family": "neuronspark"})
    t.input_ids = rng.integers(0, VOCAB, size=(B, T)).astype(np.int64)
    for key, (kind, n, spiking) in POPS.items():
        vi = rng.integers(-3000, 3000, size=(B, T, K, n)).astype(np.int32)
        if spiking:
            t.add(key, kind, fmt={"v": FRAC}, saturation={"sat_state": 0},
                  v_int=vi, v=vi * 2.0 ** -FRAC, spikes=(vi > 1500))
        else:
            t.add(key, kind, fmt={"out": FRAC}, out_int=vi, out=vi * 2.0 ** -FRAC)
    t.logits = rng.normal(size=(B, T, VOCAB)).astype(np.float32)
    return t


def copy_trace(t: Trace, stage: str) -> Trace:
    c = Trace(dict(t.meta, stage=stage), logits=None if t.logits is None else t.logits.copy(),
              input_ids=None if t.input_ids is None else t.input_ids.copy())
    for k, e in t.entries.items():
        c.add(k, e.kind, fmt=dict(e.fmt), saturation=dict(e.saturation), **{n: a.copy() for n, a in e.arrays.items()})
    return c
