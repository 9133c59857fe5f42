"""`load_model(path)`: detect the model family from the files on disk and load it.

- a directory with `config.json`: its `model_type` picks the family ("neuronspark"); a Nord
  config (`model_family: "nord"`, or `d_model` + `n_clusters`) or a folder of `nord_*.pt` goes to Nord;
- a `.pt` / `.pth` file: a `torch.save` dict, read with `weights_only=True` (pickled code is never
  executed). `model_state_dict` + `model_config` is a NeuronSpark training checkpoint;
  `model_state_dict` + `config` is a Nord checkpoint (handled by `ns_compile.models.nord`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ns_compile.errors import UserError
from ns_compile.models.base import GenerationConfig, ModelHandle  # noqa: F401

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def load_model(path: str | os.PathLike, *, weights: bool = True) -> ModelHandle:
    """Load a checkpoint. `weights=False` allows shape-only use (inspect): a directory with only
    config.json is accepted and the weight header, when present, is validated without reading data."""
    p = Path(path)
    if not p.exists():
        raise UserError("no such file or directory", p)
    if p.is_file() and (p.name == "config.json" or p.suffix == ".safetensors"):
        p = p.parent          # a file inside an HF directory names the directory
    if p.is_dir():
        return _load_dir(p, weights=weights)
    if p.suffix in TORCH_SUFFIXES:
        return _load_torch_file(p, weights=weights)
    raise UserError("not a checkpoint: expected a directory with config.json or a .pt/.pth file", p)


def _load_dir(p: Path, *, weights: bool) -> ModelHandle:
    from ns_compile.models.nord import load_nord, looks_like_nord
    if looks_like_nord(p):      # a Nord config.json (config-only planning) or a folder of nord_*.pt
        return load_nord(p, weights=weights)
    if not (p / "config.json").is_file():
        raise UserError("no config.json in this directory", p)
    # config.read_config_json checks model_type and rejects unknown families with the file named
    from ns_compile.models.neuronspark import load_dir
    return load_dir(p, weights=weights)


def _torch_load(p: Path):
    import pickle
    import re
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # e.g. "Detected pickle protocol 4"
            try:
                return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):     # legacy (non-zip) files cannot be memory-mapped
                    raise
                return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (it references {m.group(1)})" if m else ""
        raise UserError("refusing to load: the file needs unsafe unpickling, i.e. it is not a plain dict of "
                        f"tensors and Python values{what}; pickled code is never executed", p) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read as a PyTorch checkpoint (truncated or corrupt?): {first}", p) from None


def _load_torch_file(p: Path, *, weights: bool) -> ModelHandle:
    obj = _torch_load(p)
    if not isinstance(obj, dict) or "model_state_dict" not in obj:
        raise UserError("unrecognised checkpoint: expected a dict with model_state_dict and "
                        "model_config (NeuronSpark training .pth) or config (Nord .pt)", p)
    if "model_config" in obj:
        from ns_compile.models.neuronspark import load_training_checkpoint
        return load_training_checkpoint(p, obj)
    if "config" in obj:
        del obj
        try:
            from ns_compile.models.nord import load_nord
        except ImportError:
            raise UserError("this is a Nord checkpoint, but the Nord frontend is not available", p) from None
        return load_nord(p, weights=weights)
    raise UserError("unrecognised checkpoint: model_state_dict without model_config or config", p)
