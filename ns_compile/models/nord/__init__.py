"""Nord (spiking LM, v3 144M and v4.2 618M lineages) frontend: safe loading, exact fp32 reference,
generation (incremental cache, upstream samplers, v3 inference-time STDP) and shape-only inspect.

Entry point for the dispatcher: `load_nord(path, *, weights=True, keep_state=False)`, where
path is a Nord `.pt` file, a directory holding one (nord_v4_final.pt, nord_final.pt,
*_latest.pt, highest *_step_*.pt), or a config-only directory / `config.json` (shape-only
inspect). `looks_like_nord(path)` / `is_nord_config(dict)` are the cheap detection helpers.
"""
from __future__ import annotations

from .checkpoint import load_checkpoint, looks_like_nord
from .config import NordV3Config, NordV4Config, is_nord_config
from .handle import NordHandle


def load_nord(path, *, weights: bool = True, keep_state: bool = False, use_sdpa: bool | None = None) -> NordHandle:
    """Load a Nord checkpoint (torch.load weights_only=True only) or a config-only directory.

    weights=False validates config and tensor shapes without reading tensor data (memory-mapped).
    keep_state=True keeps persistent `_v_mem_state`/`_i_syn_state` buffers (used only when the
    handle's opt-in `persistent` mode is switched on); by default they are dropped as the
    upstream chats do. use_sdpa overrides the v4 config's `use_sdpa_attention`.
    """
    return NordHandle(load_checkpoint(path, weights=weights, keep_state=keep_state), use_sdpa=use_sdpa)


__all__ = ["load_nord", "looks_like_nord", "is_nord_config", "NordHandle", "NordV3Config", "NordV4Config"]
