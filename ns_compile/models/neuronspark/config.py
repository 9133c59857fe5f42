"""NeuronSpark-V1 configuration (spec §2.1).

All sizes must be given explicitly: the upstream code has three different sets of defaults
(spec §2.1), so a missing size is an error here, never a silent default. Only `v_th_min`
(not a size; the exporter always writes 0.1 and the training `.pth` does not store it)
defaults to 0.1.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ns_compile.errors import UserError

MODEL_TYPE = "neuronspark"
SIZE_KEYS = ("vocab_size", "D", "N", "K", "num_layers", "D_ff")
V_TH_MIN_DEFAULT = 0.1


@dataclass(frozen=True)
class NSConfig:
    vocab_size: int
    D: int            # visible / residual width
    N: int            # hidden selective neurons per visible channel (DN = D*N)
    K: int            # frames per token
    num_layers: int
    D_ff: int
    v_th_min: float = V_TH_MIN_DEFAULT
    v_th_min_defaulted: bool = False

    @property
    def DN(self) -> int:
        return self.D * self.N

    def sizes(self) -> dict:
        d = asdict(self)
        d.pop("v_th_min_defaulted")
        return d

    @classmethod
    def from_dict(cls, d: dict, path) -> "NSConfig":
        """Validate a config mapping (config.json or a .pth `model_config`); errors name `path`."""
        if not isinstance(d, dict):
            raise UserError("the model config is not a JSON object / dict", path)
        missing = [k for k in SIZE_KEYS if k not in d]
        if missing:
            raise UserError(f"config is missing {', '.join(missing)} (all of {', '.join(SIZE_KEYS)} "
                            "must be given explicitly)", path)
        sizes = {}
        for k in SIZE_KEYS:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise UserError(f"config {k} must be a positive integer, got {v!r}", path)
            sizes[k] = v
        defaulted = "v_th_min" not in d or d["v_th_min"] is None
        v_th_min = V_TH_MIN_DEFAULT if defaulted else d["v_th_min"]
        if isinstance(v_th_min, bool) or not isinstance(v_th_min, (int, float)) or not math.isfinite(v_th_min):
            raise UserError(f"config v_th_min must be a finite number, got {v_th_min!r}", path)
        return cls(**sizes, v_th_min=float(v_th_min), v_th_min_defaulted=defaulted)


def read_config_json(path: Path) -> dict:
    """config.json as a dict, with `model_type` checked to be "neuronspark"."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror}", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"not valid JSON ({e})", path) from None
    if not isinstance(d, dict):
        raise UserError("expected a JSON object", path)
    mt = d.get("model_type")
    if mt is None:
        raise UserError("no model_type (expected \"neuronspark\")", path)
    if mt != MODEL_TYPE:
        raise UserError(f"unsupported model_type {mt!r} (this frontend reads \"neuronspark\"; "
                        "Nord checkpoints are .pt files)", path)
    return d
