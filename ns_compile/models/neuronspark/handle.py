"""NeuronSpark-V1 frontend: loading (HF directory or training .pth) and the ModelHandle."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import torch

from ns_compile.errors import UserError
from ns_compile.models.base import GenerationConfig, ModelHandle, resolve_device
from ns_compile.models.neuronspark import checkpoint as ckpt
from ns_compile.models.neuronspark import inspect as insp
from ns_compile.models.neuronspark.config import NSConfig, read_config_json
from ns_compile.models.neuronspark.reference import NSState, forward_tokens, sample
from ns_compile.progress import Progress
from ns_compile.tokenizer import Tokenizer

WEIGHTS_FILE = "model.safetensors"
# frames x batch x widest population per chunk; bounds the activation memory of a long prompt
_CHUNK_ELEMENTS = 1 << 26
# show a progress bar (on a terminal) when a call needs more multiply-accumulates than this
_PROGRESS_MACS = 2e10


class NeuronSparkHandle(ModelHandle):
    family = "neuronspark"

    def __init__(self, path: Path, config: NSConfig, *, config_path: Path, source: ckpt.WeightSource | None,
                 tokenizer: Tokenizer | None, fmt: str):
        self.path = Path(path)
        self.config = config
        self.config_path = config_path
        self.source = source
        self.tokenizer = tokenizer
        self.format = fmt
        self._weights = None
        self._weights_key = None
        self.last_stats = None

    # ---- weights --------------------------------------------------------------------------------
    @property
    def has_weights(self) -> bool:
        return self.source is not None

    def _need_weights(self):
        if self.source is None:
            raise UserError(f"no weights: {WEIGHTS_FILE} not found (a config-only directory supports only "
                            "`inspect`)", self.path)

    def weights(self, device="cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The parameters on `device` (matrices in `dtype`), read once and cached for one setting."""
        self._need_weights()
        if dtype not in (torch.float32, torch.bfloat16):
            raise UserError(f"unsupported dtype {dtype} (use float32 or bfloat16)")
        dev = resolve_device(device)
        key = (str(dev), dtype)
        if self._weights_key != key:
            self._weights = None          # never hold two converted copies
            n = len(self.source.keys())
            with Progress(n, "loading weights", enabled=None if self._big() else False) as p:
                w = ckpt.materialize(self.source, self.config, device=dev, dtype=dtype, progress=p)
            if dtype != torch.float32:    # tied head in the compute dtype; the lookup stays fp32
                w["lm_head"] = w["embed_tokens.weight"].to(dtype)
            self._weights, self._weights_key = w, key
        return self._weights

    def _big(self, tokens: int = 1) -> bool:
        return insp.describe(self.config)["synapses"]["macs_per_token"] * tokens > _PROGRESS_MACS

    # ---- running --------------------------------------------------------------------------------
    def new_state(self, batch: int = 1, device="cpu") -> NSState:
        return NSState.zeros(self.config, batch, resolve_device(device))

    def _check_ids(self, ids: torch.Tensor):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.config.vocab_size)][0].item()
            raise UserError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")

    def forward(self, ids: torch.Tensor, state: NSState, *, device="cpu", dtype=torch.float32,
                progress: bool | None = None, probe=None) -> torch.Tensor:
        """Run ids [B, T] from `state` (updated in place): logits [B, T, V] fp32 on the device.

        Long inputs are split into token chunks (the state carries over, so this is exact) to
        bound activation memory; each chunk runs layer by layer over all of its frames.
        `probe(key, **tensors)` observes every population per frame (see reference.py, "Probing");
        with chunking it is called once per chunk, in time order.
        """
        w = self.weights(device, dtype)
        dev = resolve_device(device)
        ids = ids.to(dev, torch.long)
        self._check_ids(ids)
        B, T = ids.shape
        cfg = self.config
        chunk = max(1, _CHUNK_ELEMENTS // (cfg.K * B * max(cfg.DN, 2 * cfg.D_ff)))
        starts = list(range(0, T, chunk))
        enabled = (None if self._big(B * T) else False) if progress is None else progress
        outs = []
        with torch.inference_mode(), Progress(len(starts) * cfg.num_layers, "forward", enabled=enabled) as p:
            for s in starts:
                outs.append(forward_tokens(w, cfg, ids[:, s:s + chunk], state, on_layer=p.update, probe=probe))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def logits(self, ids: torch.Tensor, *, device="cpu", dtype=torch.float32) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() != 2:
            raise UserError(f"input ids must be [batch, length], got shape {list(ids.shape)}")
        state = self.new_state(ids.shape[0], device)
        return self.forward(ids, state, device=device, dtype=dtype).float().cpu()

    def generate(self, prompt_ids: Sequence[int], gen: GenerationConfig, *, device="cpu",
                 dtype=torch.float32) -> list[int]:
        """Prefill the prompt once, then step one token (K frames) at a time from the carried
        membrane state (spec §5). Returns the new ids; an EOS, when produced, is included."""
        if gen.extra.get("stdp"):
            raise UserError("--stdp is a Nord feature; NeuronSpark has no online plasticity", self.path)
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise UserError("the prompt is empty")
        self._check_ids(torch.tensor(prompt))
        if gen.max_new_tokens < 0:
            raise UserError("max_new_tokens must be ≥ 0")
        if gen.top_k < 0:
            raise UserError("top_k must be ≥ 0")
        seed = gen.seed if gen.seed is not None else int.from_bytes(os.urandom(4), "little")
        rng = torch.Generator(device="cpu")
        rng.manual_seed(seed)
        new: list[int] = []
        t0 = time.perf_counter()
        if gen.max_new_tokens == 0:
            self.last_stats = {"prompt_tokens": len(prompt), "new_tokens": 0, "seed": seed}
            return new
        state = self.new_state(1, device)
        last = self.forward(torch.tensor([prompt]), state, device=device, dtype=dtype)[:, -1]
        t_prefill = time.perf_counter() - t0
        with Progress(gen.max_new_tokens, "generate",
                      enabled=None if self._big(gen.max_new_tokens) else False) as p:
            while True:
                tok = int(sample(last.float().cpu(), gen.temperature, gen.top_k, rng)[0])
                new.append(tok)
                p.update()
                if len(new) >= gen.max_new_tokens or (gen.eos_token_id is not None and tok == gen.eos_token_id):
                    break
                last = self.forward(torch.tensor([[tok]]), state, device=device, dtype=dtype, progress=False)[:, -1]
        t_total = time.perf_counter() - t0
        decode_s = t_total - t_prefill
        self.last_stats = {
            "prompt_tokens": len(prompt),
            "new_tokens": len(new),
            "prefill_s": round(t_prefill, 4),
            "decode_s": round(decode_s, 4),
            "decode_tokens_per_s": round((len(new) - 1) / decode_s, 2) if len(new) > 1 and decode_s > 0 else None,
            "seed": seed,
            "state_floats": state.floats_per_sequence(),
            "stopped_on_eos": gen.eos_token_id is not None and bool(new) and new[-1] == gen.eos_token_id,
            "device": str(resolve_device(device)),
            "dtype": str(dtype).replace("torch.", ""),
        }
        return new

    # ---- describing ------------------------------------------------------------------------------
    def inspect(self) -> dict:
        info = insp.describe(self.config)
        info["checkpoint"] = str(self.path)
        info["format"] = self.format
        if self.source is None:
            info["weights"] = "absent (shape-only)"
        else:
            dtypes = ckpt.storage_summary(self.source)
            info["weights"] = f"{self.source.path.name}: " + ", ".join(f"{v:,} {k}" for k, v in dtypes.items())
            info["weight_dtypes"] = dtypes
        info["tokenizer"] = None if self.tokenizer is None else str(self.tokenizer.path)
        return info

    def format_inspect(self, info: dict) -> str:
        return insp.format_text(info)

    def encode_prompt(self, text: str, *, chat: bool = False, system: str | None = None) -> list[int]:
        """Chat: the ChatML template with a generation prompt. Plain text: the pretraining format,
        the bos string (`<|im_start|>`) followed by the text (spec §6)."""
        if self.tokenizer is None or chat:
            return super().encode_prompt(text, chat=chat, system=system)
        bos = self.tokenizer.special_tokens.get("bos_token", "")
        return self.tokenizer.encode(bos + text)


# ---- loading ------------------------------------------------------------------------------------

def load_dir(path: Path, *, weights: bool = True) -> NeuronSparkHandle:
    """A Hugging Face directory: config.json [+ model.safetensors] [+ tokenizer files]."""
    cfg_path = path / "config.json"
    cfg = NSConfig.from_dict(read_config_json(cfg_path), cfg_path)
    wpath = path / WEIGHTS_FILE
    source = None
    if wpath.exists():
        source = ckpt.SafetensorsSource(wpath)
        ckpt.validate(source, cfg, cfg_path)
    elif weights:
        raise UserError(f"no weights: {WEIGHTS_FILE} not found", path)
    tok = Tokenizer.from_dir(path)
    return NeuronSparkHandle(path, cfg, config_path=cfg_path, source=source, tokenizer=tok, fmt="hf-dir")


def load_training_checkpoint(path: Path, obj: dict) -> NeuronSparkHandle:
    """A training `.pth` already loaded with weights_only=True: model_state_dict + model_config."""
    cfg = NSConfig.from_dict(obj.get("model_config"), path)
    sd = obj.get("model_state_dict")
    if not isinstance(sd, dict):
        raise UserError("model_state_dict is not a dict of tensors", path)
    source = ckpt.StateDictSource(sd, path)
    ckpt.validate(source, cfg, path)
    tok = Tokenizer.from_dir(path.parent)
    return NeuronSparkHandle(path, cfg, config_path=path, source=source, tokenizer=tok, fmt="training-pth")
