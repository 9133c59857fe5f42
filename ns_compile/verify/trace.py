"""Trace: what one stage computed for one input batch, in one portable file.

A trace holds, for every population (canonical keys, `ns_compile.verify.keys`) and every token
and frame, the membrane state `v` (float units; de-quantized for integer stages) and for integer
stages the raw integers `v_int`, the spikes of spiking populations, the per-frame payload/output
`out` (`out_int`) of stateless populations, per-token host values `token` (`token_int`), the
saturation counters per population and the logits per token, plus metadata (stage, family,
config, checksum, input ids, torch/device, ns-compile version).

File format (one self-contained ``.safetensors`` file; no Lava, no pickle):

- tensors ``"{key}/{field}"`` with field in FIELDS, frame fields shaped [B, T, K, n], token
  fields [B, T, n]; ``"logits"`` float32 [B, T, V]; ``"input_ids"`` int64 [B, T];
- the safetensors header metadata ``{"ns_compile_trace": "<JSON>"}`` with ``format``
  (TRACE_FORMAT), ``meta`` and ``entries`` (per key: kind, order, fmt (fracs), saturation).

Written atomically (`ns_compile.atomic.atomic_path`); importable on Python 3.10-3.12 without Lava.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ns_compile.errors import UserError
from ns_compile.verify.keys import sort_keys

TRACE_FORMAT = "ns-compile-trace/1"
FRAME_FIELDS = ("v", "v_int", "spikes", "out", "out_int")
TOKEN_FIELDS = ("token", "token_int")
FIELDS = FRAME_FIELDS + TOKEN_FIELDS
INTEGER_FIELDS = ("v_int", "out_int", "token_int")
META_KEY = "ns_compile_trace"

STAGES = ("reference", "reference-bf16", "emulator", "lava-sim-float", "lava-sim-fixed", "loihi2")
INTEGER_STAGES = ("emulator", "lava-sim-fixed", "loihi2")


@dataclass
class Entry:
    """One population (or per-token host value) of a trace."""
    key: str
    kind: str = "?"                                   # neuron type, or "host"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    fmt: dict[str, int] = field(default_factory=dict)  # fracs of the integer fields: {"V": f, "out": f}
    saturation: dict[str, int] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)

    @property
    def size(self) -> int:
        for a in self.arrays.values():
            return int(a.shape[-1])
        return 0

    @property
    def state_field(self) -> str:
        """The field compared as "membrane state": v where present, else out, else token."""
        for f in ("v", "out", "token"):
            if f in self.arrays:
                return f
        return "v"


@dataclass
class Trace:
    meta: dict[str, Any]
    entries: dict[str, Entry] = field(default_factory=dict)
    logits: np.ndarray | None = None                 # float32 [B, T, V]
    input_ids: np.ndarray | None = None              # int64 [B, T]

    @property
    def stage(self) -> str:
        return self.meta.get("stage", "?")

    @property
    def integer(self) -> bool:
        return bool(self.meta.get("integer", self.stage in INTEGER_STAGES))

    @property
    def frames(self) -> int:
        return int(self.meta.get("frames") or self.meta.get("config", {}).get("K") or 1)

    def keys(self) -> list[str]:
        return sort_keys(self.entries)

    def add(self, key: str, kind: str = "?", *, fmt=None, saturation=None, **arrays) -> Entry:
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = Entry(key, kind)
        if kind != "?":
            e.kind = kind
        for name, a in arrays.items():
            if a is None:
                continue
            if name not in FIELDS:
                raise ValueError(f"unknown trace field {name!r}")
            # contiguous, so that reductions sum in the same order in memory and after a reload
            e.arrays[name] = np.ascontiguousarray(_as_stored(name, np.asarray(a)))
        if fmt:
            e.fmt.update({k: int(v) for k, v in fmt.items()})
        if saturation:
            e.saturation.update({k: int(v) for k, v in saturation.items()})
        return e

    def select(self, patterns: list[str] | None) -> "Trace":
        """Keep only the entries whose key matches one of the glob patterns (all when None)."""
        if not patterns:
            return self
        keep = {k: e for k, e in self.entries.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
        return Trace(dict(self.meta, populations_filter=list(patterns)), keep, self.logits, self.input_ids)

    # ---- file ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        from ns_compile.atomic import atomic_path

        tensors: dict[str, np.ndarray] = {}
        entries_meta = {}
        for i, key in enumerate(self.keys()):
            e = self.entries[key]
            entries_meta[key] = {"kind": e.kind, "order": i, "fmt": e.fmt, "saturation": e.saturation,
                                 "fields": sorted(e.arrays)}
            for name, a in e.arrays.items():
                tensors[f"{key}/{name}"] = np.ascontiguousarray(a)
        if self.logits is not None:
            tensors["logits"] = np.ascontiguousarray(self.logits, dtype=np.float32)
        if self.input_ids is not None:
            tensors["input_ids"] = np.ascontiguousarray(self.input_ids, dtype=np.int64)
        header = {"format": TRACE_FORMAT, "meta": _jsonable(self.meta), "entries": entries_meta}
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(header, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trace":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise UserError("no such trace file", path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                md = f.metadata() or {}
                if META_KEY not in md:
                    raise UserError("not an ns-compile trace (no ns_compile_trace metadata)", path)
                header = json.loads(md[META_KEY])
                if header.get("format") != TRACE_FORMAT:
                    raise UserError(f"unsupported trace format {header.get('format')!r} "
                                    f"(this ns-compile reads {TRACE_FORMAT})", path)
                names = list(f.keys())
                t = cls(header.get("meta", {}))
                for key, em in header.get("entries", {}).items():
                    t.entries[key] = Entry(key, em.get("kind", "?"), {}, dict(em.get("fmt", {})),
                                           dict(em.get("saturation", {})))
                for n in names:
                    if n == "logits":
                        t.logits = f.get_tensor(n)
                    elif n == "input_ids":
                        t.input_ids = f.get_tensor(n)
                    else:
                        key, _, name = n.rpartition("/")
                        t.entries.setdefault(key, Entry(key)).arrays[name] = f.get_tensor(n)
        except UserError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise UserError(f"cannot read trace: {e}", path) from None
        return t


def _as_stored(name: str, a: np.ndarray) -> np.ndarray:
    if name == "spikes":
        return a.astype(np.uint8, copy=False)
    if name in INTEGER_FIELDS:
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer, got {a.dtype}")
        if a.size and (a.min() < -(2 ** 31) or a.max() >= 2 ** 31):
            return a.astype(np.int64, copy=False)
        return a.astype(np.int32, copy=False)
    return a.astype(np.float32, copy=False)


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ---- metadata helpers ------------------------------------------------------------------------------

def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def runtime_info(device: str | None = None) -> dict:
    from ns_compile import __version__

    info = {"ns_compile_version": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "numpy": np.__version__}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if device and device.startswith("cuda") and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:
        pass
    info["device"] = device or "cpu"
    return info
