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

from ns_compile.errors import UserError


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

    # ---- optional, with defaults (families may override) -------------------------------------
    last_stats: dict | None = None   # filled by generate() when the family keeps statistics

    def format_inspect(self, info: dict) -> str:
        """Human-readable rendering of `inspect()`; the default is indented JSON."""
        import json
        return json.dumps(info, indent=2, ensure_ascii=False)

    def encode_prompt(self, text: str, *, chat: bool = False, system: str | None = None) -> list[int]:
        """Token ids for a text prompt (`chat`: the tokenizer's chat template with a generation prompt)."""
        if self.tokenizer is None:
            raise UserError("the checkpoint has no tokenizer (tokenizer.json); use --prompt-ids", self.path)
        if chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True)
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str | None:
        """Text of generated ids (special tokens skipped), or None without a tokenizer."""
        return None if self.tokenizer is None else self.tokenizer.decode(ids)


def resolve_device(device: str | torch.device) -> torch.device:
    """torch.device for a user-given name; a UserError when it is unknown or unavailable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r} (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r} (use cpu or cuda)")
    return dev
