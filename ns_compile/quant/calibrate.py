"""Calibration: run the float IR interpreter on calibration tokens and record activation ranges.

`Recorder` keeps, per tensor name, the exact max |x|, the count, and a bounded deterministic
sample of |x| (for percentiles and the activation quantization error of the report).
"""
from __future__ import annotations

import numpy as np
import torch

# A short built-in English/Chinese calibration text (used when no --calibration file is given).
DEFAULT_TEXT = (
    "The quick brown fox jumps over the lazy dog. Spiking neural networks process information with "
    "membrane potentials that leak, integrate and fire. 今天天气很好，我们去公园散步吧。"
    "人工智能正在改变世界，神经形态芯片可以用很低的功耗运行语言模型。"
    "Question: what is the capital of France? Answer: Paris. 中国的首都是北京。"
)

_PER_CALL = 4096
_CAP = 1 << 16


class Recorder:
    def __init__(self, seed: int = 0):
        self.stats: dict[str, dict] = {}
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(seed)

    def __call__(self, name: str, x: torch.Tensor):
        x = x.detach().flatten()
        if x.numel() == 0:
            return
        st = self.stats.get(name)
        if st is None:
            st = self.stats[name] = {"max": 0.0, "n": 0, "samples": [], "size": 0}
        st["max"] = max(st["max"], float(x.abs().max()))
        st["n"] += x.numel()
        if x.numel() > _PER_CALL:
            x = x[torch.randint(0, x.numel(), (_PER_CALL,), generator=self._gen).to(x.device)]
        a = x.abs().to("cpu", torch.float64).numpy()
        st["samples"].append(a)
        st["size"] += a.size
        if st["size"] > 2 * _CAP:                 # thin deterministically: keep every other value
            cat = np.concatenate(st["samples"])[::2]
            st["samples"] = [cat]
            st["size"] = cat.size

    def sample(self, name: str) -> np.ndarray:
        st = self.stats.get(name)
        if st is None:
            return np.zeros(0)
        return np.concatenate(st["samples"])

    def max(self, name: str, default: float = 0.0) -> float:
        st = self.stats.get(name)
        return default if st is None else st["max"]

    def pct(self, name: str, p: float) -> float:
        s = self.sample(name)
        if s.size == 0:
            return 0.0
        return float(np.percentile(s, p))


def batch_rows(ids: torch.Tensor, rows: int = 4, min_len: int = 16) -> torch.Tensor:
    """A long single calibration sequence [1, T] as `rows` equal chunks [rows, T//rows] (each from
    a fresh state): the same activations statistics, rows× fewer sequential steps."""
    if ids.shape[0] != 1 or ids.shape[1] < rows * min_len:
        return ids
    T = ids.shape[1] // rows * rows
    return ids[:, :T].reshape(rows, T // rows)


def run_calibration(graph, ids: torch.Tensor, *, dtype=torch.float64, device="cpu", seed: int = 0) -> Recorder:
    """Run the float graph on ids [B, T] (fresh state) with a Recorder attached."""
    from ns_compile.sim import Emulator
    rec = Recorder(seed)
    emu = Emulator(graph, device=device, dtype=dtype, recorder=rec)
    with torch.inference_mode():
        logits = emu.forward(ids)
    rec.logits = logits
    rec.activity = emu.activity()
    return rec
