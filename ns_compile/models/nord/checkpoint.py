"""Loading Nord checkpoints safely (nord.md §1.1, §2.3).

* Only `torch.load(weights_only=True)`: a file that needs arbitrary unpickling is refused.
* v3 vs v4.x is decided by the config keys (`sensory_layers`, `n_experts`, `memory_size`, ...)
  and cross-checked against the LIF key style (`threshold` vs `threshold_raw`).
* config = dataclass defaults overwritten by EVERY stored field.
* Training extras (step, loss, optimizer/scaler state, version) are ignored; a leading
  `module.` prefix is stripped; persistent `_v_mem_state`/`_i_syn_state` buffers are dropped
  unless keep_state=True.
* Missing / unexpected / mis-shaped keys, NaN/Inf weights, a config that contradicts the
  weights and truncated files all raise UserError naming the file.
"""
from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ns_compile.errors import UserError

from .config import build_config, is_nord_config, is_v4_config
from .shapes import buffer_shapes, is_state_key, param_shapes

# file names the upstream chats look for, most preferred first (v4 names before v3 ones)
PREFERRED_NAMES = ("nord_v4_final.pt", "nord_v4_latest.pt", "nord_final.pt", "nord_latest.pt",
                   "nord_500m_latest.pt")
STEP_PATTERNS = (re.compile(r"^nord_v4_step_(\d+)\.pt$"), re.compile(r"^nord_step_(\d+)\.pt$"))
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass
class NordCheckpoint:
    path: Path
    cfg: object
    sd: dict | None                     # fp32 (float) tensors, validated; None when config-only
    state: dict = field(default_factory=dict)   # LIF prefix -> (v, i) persistent state, keep_state only
    version_tag: str | None = None      # the stored "version" string (v4 saves), if any
    extras: list = field(default_factory=list)  # ignored top-level keys
    config_only: bool = False
    dropped: list = field(default_factory=list)  # dropped persistent-state keys


def _fmt_shape(s) -> str:
    return "(" + ", ".join(str(int(x)) for x in s) + (",)" if len(s) == 1 else ")")


def _names(keys, n=5) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def find_checkpoint_in_dir(d: Path) -> Path | None:
    """The file an upstream chat would pick in a directory: *_final, *_latest, highest *_step_*."""
    for n in PREFERRED_NAMES:
        if (d / n).is_file():
            return d / n
    for pat in STEP_PATTERNS:
        steps = sorted(((int(m.group(1)), p) for p in d.iterdir() if (m := pat.match(p.name))), reverse=True)
        if steps:
            return steps[0][1]
    return None


def read_config_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config: {e}", path)
    except json.JSONDecodeError as e:
        raise UserError(f"config.json is not valid JSON ({e.msg} at line {e.lineno})", path)
    if not is_nord_config(data):
        raise UserError("config.json is not a Nord config (expected \"model_family\": \"nord\" or the keys "
                        "d_model and n_clusters without a model_type)", path)
    if "d_model" not in data and isinstance(data.get("config"), dict):
        data = dict(data["config"])
    return data


def torch_load_safe(path: Path, *, mmap: bool = False):
    """torch.load with weights_only=True; every failure becomes a one-line UserError."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e).lower():
                return torch.load(path, map_location="cpu", weights_only=True)
            raise
    except FileNotFoundError:
        raise UserError("no such file", path)
    except IsADirectoryError:
        raise UserError("is a directory, expected a checkpoint file", path)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m or re.search(r"Unsupported (global|class)|REDUCE|BUILD|Trying to (call|instantiate)", msg):
            what = f" (it references {m.group(1)})" if m else ""
            raise UserError(f"refusing to load: the checkpoint needs arbitrary unpickling{what}; only "
                            f"tensors, dicts and plain Python values are accepted (torch.load "
                            f"weights_only=True)", path)
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
        detail = detail.group(1).strip().splitlines()[0] if detail else msg.splitlines()[0]
        raise UserError(f"cannot read checkpoint (truncated or corrupt file?): {detail[:200]}", path)
    except (EOFError, zipfile.BadZipFile, ValueError, OSError, RuntimeError, KeyError, AttributeError,
            TypeError, IndexError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot read checkpoint (truncated or corrupt file?): {first}", path)


def load_checkpoint(path, *, weights: bool = True, keep_state: bool = False) -> NordCheckpoint:
    """Load a Nord .pt file, a directory holding one, or a config-only directory / config.json."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file or directory", path)
    if path.is_dir():
        ck = find_checkpoint_in_dir(path)
        if ck is not None:
            return load_checkpoint(ck, weights=weights, keep_state=keep_state)
        cj = path / "config.json"
        if cj.is_file():
            return _config_only(cj)
        raise UserError("no Nord checkpoint (nord_*.pt) and no config.json in this directory", path)
    if path.name.endswith(".json"):
        return _config_only(path)

    obj = torch_load_safe(path, mmap=not weights)
    if not isinstance(obj, dict):
        raise UserError(f"expected a dict checkpoint with model_state_dict and config, got "
                        f"{type(obj).__name__}", path)
    if "model_state_dict" in obj:
        sd = obj["model_state_dict"]
    elif "state_dict" in obj:
        sd = obj["state_dict"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("bare state dict without a `config`: a Nord checkpoint needs its config dict "
                        "(save {'model_state_dict': ..., 'config': ...})", path)
    else:
        raise UserError(f"no model_state_dict in checkpoint (top-level keys: {_names(map(str, obj))})", path)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError("model_state_dict is not a dict of tensors", path)
    stored_cfg = obj.get("config")
    if stored_cfg is None:
        raise UserError("checkpoint has no `config` dict; the Nord architecture cannot be known", path)
    if not isinstance(stored_cfg, dict):
        raise UserError(f"checkpoint `config` is a {type(stored_cfg).__name__}, expected a dict", path)
    extras = [str(k) for k in obj if k not in ("model_state_dict", "state_dict", "config")]
    version_tag = obj.get("version") if isinstance(obj.get("version"), str) else None

    # strip a leading "module." (DataParallel)
    if any(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}

    v4_weights = any(k.endswith(".threshold_raw") for k in sd)
    v3_weights = any(k.endswith(".threshold") for k in sd)
    v4_cfg = is_v4_config(stored_cfg) or (version_tag is not None and version_tag.startswith(("v4", "4", "5")))
    if v4_cfg and v3_weights and not v4_weights:
        raise UserError("config is Nord v4 (zones/experts/memory keys) but the weights are v3 "
                        "(LIF key `threshold`, not `threshold_raw`)", path)
    if not v4_cfg and v4_weights and not v3_weights:
        raise UserError("config is Nord v3 (no sensory_layers/n_experts/memory_size) but the weights are v4 "
                        "(LIF key `threshold_raw`)", path)
    cfg = build_config(stored_cfg, version="v4" if v4_cfg else "v3", path=path)

    state, dropped = {}, []
    for k in [k for k in sd if is_state_key(k)]:
        t = sd.pop(k)
        dropped.append(k)
        if keep_state:
            prefix, kind = k.rsplit(".", 1)
            state.setdefault(prefix, {})[kind] = t
    if keep_state:
        state = {p: (s.get("_v_mem_state"), s.get("_i_syn_state")) for p, s in state.items()}

    _check_keys(cfg, sd, path)
    if weights:
        _check_finite(sd, path)
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
        _check_cluster_ids(cfg, sd, path)
    else:
        sd = None
    return NordCheckpoint(path, cfg, sd, state if keep_state else {}, version_tag, extras, False, dropped)


def _config_only(cj: Path) -> NordCheckpoint:
    data = read_config_json(cj)
    cfg = build_config(data, path=cj)
    return NordCheckpoint(cj, cfg, None, {}, data.get("version") if isinstance(data.get("version"), str) else None,
                          [], True)


def _check_keys(cfg, sd: dict, path: Path) -> None:
    params = param_shapes(cfg)
    rope_rows = None
    for k, v in sd.items():
        if k.endswith(".rope.cos_cached") and v.dim() == 2:
            rope_rows = int(v.shape[0])
            break
    if rope_rows is not None and rope_rows != cfg.max_seq_len:
        raise UserError(f"config max_seq_len={cfg.max_seq_len} contradicts the weights: the saved RoPE "
                        f"tables have {rope_rows} rows", path)
    bufs = buffer_shapes(cfg)
    missing = [k for k in params if k not in sd]
    missing += [k for k, (_s, req) in bufs.items() if req and k not in sd]
    unexpected = [k for k in sd if k not in params and k not in bufs]
    if unexpected or missing:
        hint = _dimension_hint(cfg, sd)
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
        raise UserError(f"state dict does not match the Nord {cfg.version} config: " + "; ".join(parts) + hint, path)
    bad = []
    for k, v in sd.items():
        exp = params[k][1] if k in params else bufs[k][0]
        if tuple(v.shape) != tuple(exp):
            bad.append(f"{k} has shape {_fmt_shape(v.shape)}, config implies {_fmt_shape(exp)}")
        elif k in params and not v.is_floating_point():
            bad.append(f"{k} has dtype {v.dtype}, expected a floating-point tensor")
        elif k.endswith(".cluster_ids") and (v.is_floating_point() or v.is_complex()):
            bad.append(f"{k} has dtype {v.dtype}, expected an integer tensor")
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise UserError("weights contradict the config: " + "; ".join(bad[:3]) + more + _dimension_hint(cfg, sd), path)


def _dimension_hint(cfg, sd) -> str:
    """Point at the config field that disagrees with the embedding / first LIF shapes."""
    hints = []
    emb = sd.get("encoder.embed.weight")
    if emb is not None and emb.dim() == 2:
        if int(emb.shape[1]) != cfg.d_model:
            hints.append(f"d_model={cfg.d_model} but encoder.embed.weight has {int(emb.shape[1])} columns")
        if int(emb.shape[0]) != cfg.vocab_size:
            hints.append(f"vocab_size={cfg.vocab_size} but encoder.embed.weight has {int(emb.shape[0])} rows")
    nw = sd.get("input_lif.neighbor_weights")
    if nw is not None and nw.dim() == 2 and int(nw.shape[0]) != cfg.n_clusters:
        hints.append(f"n_clusters={cfg.n_clusters} but input_lif.neighbor_weights is {_fmt_shape(nw.shape)}")
    fb = sd.get("encoder.fast_basis")
    if fb is not None and fb.dim() == 2 and int(fb.shape[0]) != cfg.T:
        hints.append(f"T={cfg.T} but encoder.fast_basis has {int(fb.shape[0])} rows")
    return (" [config: " + "; ".join(hints) + "]") if hints else ""


def _check_finite(sd: dict, path: Path) -> None:
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"non-finite (NaN/Inf) values in {len(bad)} tensor(s): {_names(bad)}", path)


def _check_cluster_ids(cfg, sd: dict, path: Path) -> None:
    for k, v in sd.items():
        if k.endswith(".cluster_ids") and v.numel():
            if int(v.min()) < 0 or int(v.max()) >= cfg.n_clusters:
                raise UserError(f"{k} holds cluster ids outside [0, {cfg.n_clusters})", path)


def n_params(cfg) -> int:
    return sum(math.prod(s) for _c, s in param_shapes(cfg).values())


def looks_like_nord(path) -> bool:
    """Cheap detection for the dispatcher: a Nord config.json / directory, or a Nord file name.

    (A `.pt` file with another name is only recognisable by loading it; `load_nord` then decides.)"""
    path = Path(path)
    if path.is_dir():
        if find_checkpoint_in_dir(path) is not None:
            return True
        path = path / "config.json"
    if path.is_file() and path.name.endswith(".json"):
        try:
            return is_nord_config(json.loads(path.read_text()))
        except (OSError, ValueError, UnicodeDecodeError):
            return False
    return path.is_file() and path.name.startswith("nord") and path.suffix in CHECKPOINT_SUFFIXES
