"""What every model family (frontend) provides to the CLI and to the compiler.

A frontend turns a checkpoint on disk into a `ModelHandle`: its config, lazily read weights,
an exact fp32/bf16 reference (`logits`, `generate`), a shape-only description (`inspect`) and,
for the compiler, a lowering to the IR (`to_ir`, in ns_compile/lower/).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    temperature: float = 0.0          # <= 0: greedy
    top_k: int = 0                    # 0: off
    top_p: float = 1.0                # 1.0: off (Nord)
    repetition_penalty: float = 1.0   # 1.0: off (Nord)
    seed: int | None = None
    eos_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ModelHandle:
    """Base class of a loaded checkpoint. Subclasses set `family` and implement the methods."""

    family: str = "?"
    path: Path
    config: Any
    tokenizer: Any = None            # ns_compile.tokenizer.Tokenizer or None

    @property
    def has_weights(self) -> bool:
        raise NotImplementedError

    def inspect(self) -> dict:
        """Architecture, parameter counts, neurons/synapses per layer, carried state,
        neuromorphic vs host-side ops. Must work from shapes alone (config-only dirs)."""
        raise NotImplementedError

    def logits(self, ids: torch.Tensor, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """ids: LongTensor [B, T] -> float32 logits [B, T, V] (fresh state per call)."""
        raise NotImplementedError

    def generate(self, prompt_ids: Sequence[int], gen: GenerationConfig, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> list[int]:
        """Returns only the new token ids."""
        raise NotImplementedError
