"""`NordHandle`: the ModelHandle of Nord v3 / v4.2 checkpoints.

Optional attributes beyond ModelHandle:
  version          "v3" or "v4"
  use_sdpa         v4 attention path (default: config `use_sdpa_attention`, itself default True);
                   settable, or pass use_sdpa= to load_nord
  collect_stats    when True, logits() records sparsity statistics like extra["stats"] does
  last_stats       after logits(stats=True)/generate(extra["stats"]): {"populations": {name:
                   {neurons, rows, rate, rate_per_t}}, "mean_rate", "readout_sparsity"}; rate =
                   fraction of the population's neurons firing per frame (one timestep of one
                   token row), averaged over all frames of the call(s)
  last_generation  GenerationResult of the last generate() (step logits, loss proxies, STDP records)
  stdp_state       v3 STDP session state (loss EMA 10.0 at start); W_v updates persist across
                   generate() calls on this handle like an upstream chat session; reset_stdp() undoes
  persistent       opt-in upstream persistent-state quirk (v4 memory LIF, v3/v4 input/readout LIF
                   when persistent_mem): end state reused when the next call has the same row count
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from ns_compile.errors import UserError
from ns_compile.models.base import GenerationConfig, ModelHandle

from .checkpoint import NordCheckpoint
from .counts import describe, format_text
from .generate import V3_CHAT_DEFAULTS, V4_CHAT_DEFAULTS, run_generation, warn_v4_stdp
from .lif import finalize_stats
from .v3 import NordV3, STDPState
from .v4 import NordV4


class NordHandle(ModelHandle):
    family = "nord"

    def __init__(self, ck: NordCheckpoint, *, use_sdpa: bool | None = None):
        self.checkpoint = ck
        self.path = ck.path
        self.config = ck.cfg
        self.version = ck.cfg.version
        self._sd = ck.sd
        self._use_sdpa = (ck.cfg.use_sdpa_attention if use_sdpa is None else bool(use_sdpa)) \
            if self.version == "v4" else None
        self._models: dict = {}
        self._persistent = False
        self.collect_stats = False
        self.last_stats = None
        self.last_generation = None
        self.stdp_state = STDPState()
        self.tokenizer = _find_tokenizer(ck.path)

    # ------------------------------------------------------------------------------------------
    @property
    def has_weights(self) -> bool:
        return self._sd is not None

    @property
    def use_sdpa(self):
        return self._use_sdpa

    @use_sdpa.setter
    def use_sdpa(self, value: bool):
        if self.version != "v4":
            raise UserError("use_sdpa applies to Nord v4 only (v3 always uses top-k resonance)", self.path)
        self._use_sdpa = bool(value)
        for m in self._models.values():
            m.use_sdpa = self._use_sdpa

    @property
    def persistent(self) -> bool:
        return self._persistent

    @persistent.setter
    def persistent(self, value: bool):
        self._persistent = bool(value)
        for m in self._models.values():
            m.persistent = self._persistent

    def upstream_chat_defaults(self) -> GenerationConfig:
        """GenerationConfig with the sampling defaults of the upstream chat of this version."""
        d = V3_CHAT_DEFAULTS if self.version == "v3" else V4_CHAT_DEFAULTS
        return GenerationConfig(**d)

    def model(self, device: str = "cpu"):
        """The reference model on `device` (built once per device)."""
        if not self.has_weights:
            raise UserError("this is a config-only Nord model (no weights): only `inspect` is possible", self.path)
        dev = str(torch.device(device))
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available", self.path)
        m = self._models.get(dev)
        if m is None:
            if self.version == "v3":
                m = NordV3(self.config, self._sd, dev)
            else:
                m = NordV4(self.config, self._sd, dev, use_sdpa=self._use_sdpa)
            m.persistent = self._persistent
            if self.checkpoint.state:
                m.lif_state = {k: tuple(t.to(dev) for t in vi) for k, vi in self.checkpoint.state.items()
                               if vi[0] is not None and vi[1] is not None}
            self._models[dev] = m
        return m

    def reset_stdp(self):
        """Undo every STDP change to W_v and restart the loss EMA at 10.0."""
        self._models = {}
        self.stdp_state = STDPState()

    def reset_state(self):
        """Forget carried persistent LIF state (opt-in persistent mode)."""
        for m in self._models.values():
            m.lif_state = {}

    def encode_prompt(self, text: str, *, chat: bool = False, system: str | None = None) -> list[int]:
        """Plain text: like the upstream chats, the tokenizer's BOS id (when it has one) then the text.
        chat=True uses the tokenizer's chat template (upstream Nord has none)."""
        if self.tokenizer is None or chat:
            return super().encode_prompt(text, chat=chat, system=system)
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + self.tokenizer.encode(text)

    def format_inspect(self, info: dict) -> str:
        return format_text(info)

    # ------------------------------------------------------------------------------------------
    def inspect(self) -> dict:
        d = describe(self.config)
        d["path"] = str(self.path)
        d["has_weights"] = self.has_weights
        d["config_only"] = self.checkpoint.config_only
        ck = {}
        if self.checkpoint.version_tag:
            ck["version_tag"] = self.checkpoint.version_tag
        if self.checkpoint.extras:
            ck["ignored_top_level_keys"] = self.checkpoint.extras
        if self.checkpoint.dropped:
            ck["dropped_state_keys"] = self.checkpoint.dropped
        if self.config.extra_fields:
            ck["unknown_config_fields"] = sorted(self.config.extra_fields)
        if ck:
            d["checkpoint"] = ck
        if self.version == "v4":
            d["attention_path"] = "sdpa (full causal softmax)" if self._use_sdpa else \
                f"top-k (k={self.config.resonance_top_k}, lowest index among ties)"
        return d

    def _check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(ids)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.numel() == 0:
            raise UserError(f"token ids must be a non-empty [batch, length] array, got shape {tuple(ids.shape)}",
                            self.path)
        if ids.is_floating_point():
            raise UserError("token ids must be integers", self.path)
        ids = ids.long()
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise UserError(f"token id {lo if lo < 0 else hi} is outside the vocabulary [0, "
                            f"{self.config.vocab_size})", self.path)
        if self.version == "v4" and ids.shape[1] > self.config.max_seq_len:
            raise UserError(f"sequence length {ids.shape[1]} exceeds max_seq_len {self.config.max_seq_len} "
                            f"(the RoPE tables of this checkpoint)", self.path)
        return ids

    @staticmethod
    def _check_dtype(dtype):
        if dtype not in (None, torch.float32):
            raise UserError(f"the Nord reference runs in float32 only (got {dtype})")

    def _set_stats(self, raw: dict | None):
        if raw is None:
            return
        pops = finalize_stats(raw)
        num = sum(p["rate"] * p["neurons"] * p["rows"] for p in pops.values())
        den = sum(p["neurons"] * p["rows"] for p in pops.values())
        ro = pops.get("readout_lif")
        self.last_stats = {"populations": pops, "mean_rate": num / den if den else 0.0,
                           "readout_sparsity": (1.0 - ro["rate"]) if ro else None}

    def logits(self, ids, *, device: str = "cpu", dtype: torch.dtype = torch.float32, stats: bool = False,
               trace: dict | None = None) -> torch.Tensor:
        """ids [B, S] -> fp32 logits [B, S, V], fresh state per call (unless `persistent`).

        stats=True (or handle.collect_stats) sets handle.last_stats; a `trace` dict receives every
        intermediate under the fixture names ("blocks.0.resonance.lif_q.spikes", ...)."""
        self._check_dtype(dtype)
        m = self.model(device)
        ids = self._check_ids(ids)
        raw = {} if (stats or self.collect_stats) else None
        with torch.no_grad():
            out = m.forward(ids, trace=trace, stats=raw)
        self._set_stats(raw)
        return out.float().cpu()

    def trace(self, ids, *, device: str = "cpu") -> tuple[torch.Tensor, dict]:
        tr: dict = {}
        lg = self.logits(ids, device=device, trace=tr)
        return lg, tr

    def generate(self, prompt_ids: Sequence[int], gen: GenerationConfig, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, forced_ids: Sequence[int] | None = None,
                 use_cache: bool = True, on_step=None) -> list[int]:
        """New ids only (an EOS id, when produced, is included and ends generation).

        gen.extra["stdp"]: v3 -> reward-modulated STDP on every block's W_v after each token
        (full prefix re-run each step, the cache being stale); v4 -> no-op with a warning.
        gen.extra["stats"]: sparsity statistics over every frame processed -> last_stats."""
        self._check_dtype(dtype)
        m = self.model(device)
        ids = list(int(t) for t in prompt_ids)
        if not ids:
            raise UserError("empty prompt", self.path)
        self._check_ids(torch.tensor([ids]))
        if gen.max_new_tokens < 0:
            raise UserError("max_new_tokens must be >= 0", self.path)
        extra = gen.extra or {}
        stdp_state = None
        if extra.get("stdp"):
            if self.version == "v4":
                warn_v4_stdp()
            else:
                stdp_state = self.stdp_state
        raw = {} if (extra.get("stats") or self.collect_stats) else None
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            res = run_generation(m, ids, gen, stdp_state=stdp_state, forced_ids=forced_ids, use_cache=use_cache,
                                 stats=raw, on_step=on_step)
        if res.truncated_prompt:
            warnings.warn(f"prompt truncated to its first {res.context_lengths[0] if res.context_lengths else '?'} "
                          f"tokens as the upstream chat does", UserWarning, stacklevel=2)
        self.last_generation = res
        self._set_stats(raw)
        return res.ids


def _find_tokenizer(path):
    """A tokenizer.json next to the checkpoint (or in the config-only directory), else None."""
    from pathlib import Path

    d = Path(path)
    d = d if d.is_dir() else d.parent
    if not (d / "tokenizer.json").is_file():
        return None
    from ns_compile.tokenizer import Tokenizer
    return Tokenizer.from_dir(d)
