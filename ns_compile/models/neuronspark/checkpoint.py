"""Reading and validating NeuronSpark-V1 weights (spec §2.2).

Two on-disk forms hold the same state dict:
- the Hugging Face directory: `model.safetensors`, keys "model.<state-dict key>", memory-mapped
  and read lazily through `safetensors.safe_open` (dtype from the header);
- the training `.pth`: a dict with `model_state_dict` (keys without the prefix) and `model_config`,
  loaded with `torch.load(weights_only=True, mmap=True)`.

Validation checks only the header (names, shapes, dtypes), so it is cheap even for the 3.5 GB
file; finiteness is checked tensor by tensor when the weights are actually read.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from ns_compile.errors import UserError
from ns_compile.models.neuronspark.config import NSConfig
from ns_compile.models.neuronspark.shapes import HF_PREFIX, shape_table

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "float64", "float32", "float16", "bfloat16"}
_SHOW = 4   # how many names an error message lists


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


class WeightSource:
    """Named tensors of a checkpoint with their header info; `get` reads one tensor."""

    path: Path
    prefix: str

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, key: str) -> str:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def file_key(self, key: str) -> str:
        """The name of a state-dict key as it appears in the file."""
        return self.prefix + key


class SafetensorsSource(WeightSource):
    prefix = HF_PREFIX

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._f = safe_open(str(self.path), framework="pt", device="cpu")
            self._keys = list(self._f.keys())
            self._info = {}
            for k in self._keys:
                sl = self._f.get_slice(k)
                self._info[k] = (tuple(sl.get_shape()), sl.get_dtype())
        except OSError as e:
            raise UserError(f"cannot read: {e.strerror or e}", self.path) from None
        except Exception as e:  # SafetensorError: truncated, corrupt header, not a safetensors file
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"not a valid safetensors file (truncated or corrupt?): {msg}", self.path) from None

    def keys(self):
        return self._keys

    def shape(self, key):
        return self._info[key][0]

    def dtype(self, key):
        return self._info[key][1]

    def get(self, key):
        try:
            return self._f.get_tensor(key)
        except Exception as e:
            raise UserError(f"cannot read tensor {key}: {str(e).splitlines()[0]}", self.path) from None


class StateDictSource(WeightSource):
    prefix = ""

    def __init__(self, state_dict: dict, path: Path):
        self.path = Path(path)
        bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise UserError(f"model_state_dict holds non-tensor entries: {_names(map(str, bad))}", self.path)
        self._sd = state_dict

    def keys(self):
        return list(self._sd.keys())

    def shape(self, key):
        return tuple(self._sd[key].shape)

    def dtype(self, key):
        return str(self._sd[key].dtype).replace("torch.", "")

    def get(self, key):
        return self._sd[key]


def _layer_count(keys) -> int | None:
    idx = [int(m.group(1)) for k in keys if (m := re.match(r"layers\.(\d+)\.", k))]
    return max(idx) + 1 if idx else None


def validate(src: WeightSource, cfg: NSConfig, config_path) -> None:
    """Raise a UserError naming the file when the weights do not fit the config."""
    present = {}
    stray = []
    for fk in src.keys():
        if src.prefix and not fk.startswith(src.prefix):
            stray.append(fk)
        else:
            present[fk[len(src.prefix):]] = fk

    # 1. sizes implied by the weights vs the config: a clear message beats a list of bad shapes
    def contradiction(name, cfg_value, w_value, key):
        raise UserError(f"config says {name}={cfg_value} but the weights have {name}={w_value} "
                        f"({src.file_key(key)} is {list(src.shape(present[key]))})", config_path)

    if "embed_tokens.weight" in present:
        s = src.shape(present["embed_tokens.weight"])
        if len(s) == 2:
            if s[1] != cfg.D:
                contradiction("D", cfg.D, s[1], "embed_tokens.weight")
            if s[0] != cfg.vocab_size:
                contradiction("vocab_size", cfg.vocab_size, s[0], "embed_tokens.weight")
    nl = _layer_count(present)
    if nl is not None and nl != cfg.num_layers:
        raise UserError(f"config says num_layers={cfg.num_layers} but the weights have {nl} layers", config_path)
    k_in = "layers.0.snn_block.W_in.weight"
    if k_in in present:
        s = src.shape(present[k_in])
        if len(s) == 2 and s[1] == cfg.D and s[0] % cfg.D == 0 and s[0] // cfg.D != cfg.N:
            contradiction("N", cfg.N, s[0] // cfg.D, k_in)
    k_ff = "layers.0.snn_ffn.gate_proj.weight"
    if k_ff in present:
        s = src.shape(present[k_ff])
        if len(s) == 2 and s[0] != cfg.D_ff:
            contradiction("D_ff", cfg.D_ff, s[0], k_ff)

    # 2. names
    expected = shape_table(cfg)
    missing = [src.file_key(k) for k in expected if k not in present]
    unexpected = stray + [present[k] for k in present if k not in expected]
    if missing and unexpected:
        raise UserError(f"missing {len(missing)} tensor(s): {_names(missing)}; "
                        f"unexpected {len(unexpected)} tensor(s): {_names(unexpected)}", src.path)
    if missing:
        raise UserError(f"missing {len(missing)} tensor(s): {_names(missing)}", src.path)
    if unexpected:
        raise UserError(f"unexpected {len(unexpected)} tensor(s): {_names(unexpected)}", src.path)

    # 3. shapes and dtypes
    wrong = [f"{present[k]} is {list(src.shape(present[k]))}, expected {list(s)}"
             for k, s in expected.items() if src.shape(present[k]) != s]
    if wrong:
        more = f" (and {len(wrong) - _SHOW} more)" if len(wrong) > _SHOW else ""
        raise UserError("wrong shape: " + "; ".join(wrong[:_SHOW]) + more, src.path)
    not_float = [present[k] for k in expected if src.dtype(present[k]) not in _FLOAT_DTYPES]
    if not_float:
        raise UserError(f"non-floating-point tensor(s): {_names(not_float)} "
                        f"(dtype {src.dtype(present[not_float[0][len(src.prefix):]])})", src.path)


def storage_summary(src: WeightSource) -> dict:
    """dtype -> number of parameters, from the header."""
    out: dict[str, int] = {}
    for k in src.keys():
        d = src.dtype(k)
        out[d] = out.get(d, 0) + math.prod(src.shape(k))
    return out


def is_matrix(key: str) -> bool:
    """Linear weights (2-D) run in the compute dtype; vectors (norms, neuron constants, biases)
    stay fp32. The embedding is kept fp32 for the lookup (as upstream autocast does)."""
    return key.endswith(".weight") and key != "embed_tokens.weight" and not key.endswith("norm.weight")


def materialize(src: WeightSource, cfg: NSConfig, *, device: torch.device, dtype: torch.dtype,
                progress=None) -> dict[str, torch.Tensor]:
    """Read every tensor once, check it is finite, convert and move it. Keys without prefix."""
    out = {}
    for key in shape_table(cfg):
        t = src.get(src.file_key(key))
        if not torch.isfinite(t).all():
            what = "NaN" if torch.isnan(t).any() else "Inf"
            raise UserError(f"tensor {src.file_key(key)} contains {what} values", src.path)
        target = dtype if is_matrix(key) and t.dim() == 2 else torch.float32
        out[key] = t.to(device=device, dtype=target)
        del t
        if progress is not None:
            progress.update(1)
    return out
