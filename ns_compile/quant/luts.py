"""The lookup tables of docs/fixed_point.md §4, built once in float64 and stored in the artifact."""
from __future__ import annotations

import numpy as np

LUT_SIZE = 4096


def _centres() -> np.ndarray:
    idx = np.arange(LUT_SIZE, dtype=np.float64)
    return (idx - 2048 + 0.5) / 256.0


def lut_sigmoid() -> np.ndarray:
    """entry = clamp(q(σ(c), 12), 0, 4096), c = (idx − 2048 + 0.5)/256."""
    c = _centres()
    s = 1.0 / (1.0 + np.exp(-c))
    return np.clip(np.floor(s * 4096.0 + 0.5), 0, 4096).astype(np.int64)


def lut_softplus() -> np.ndarray:
    """entry = q(softplus(c), 12)."""
    c = _centres()
    return np.floor(np.logaddexp(0.0, c) * 4096.0 + 0.5).astype(np.int64)


def build_luts() -> dict[str, np.ndarray]:
    return {"sigmoid": lut_sigmoid(), "softplus": lut_softplus()}
