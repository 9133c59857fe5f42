"""Hardware profiles: JSON data files (partition/profiles/*.json) describing a Loihi 2 system.

Every leaf is an object ``{"value": .., "unit": .., "source": .., "confidence": ..}`` so that each
figure the partitioner uses can be traced to where it came from. A profile may ``"extends"`` a
built-in profile (or another file, relative to itself) and override leaves. `load_profile`
resolves the chain and validates every field; any problem is a `UserError` naming the field and
the reason.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ns_compile.errors import UserError

FORMAT = "ns-compile-hardware-profile/1"
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

# field path -> (kind, lower bound). kind: "int" (integer >= lo), "num" (real > lo or >= lo).
_POS_INT = ("int", 1)
_POS_NUM = ("num", 0.0)
SCHEMA: dict[str, tuple[str, float]] = {
    "system.chips": _POS_INT,
    "chip.neurocores": _POS_INT,
    "chip.mesh": ("mesh", 1),
    "chip.embedded_x86_cores": ("int", 0),
    "chip.embedded_x86_param_bytes": ("int", 0),
    "core.neurons": _POS_INT,
    "core.synapse_memory_units": _POS_INT,
    "core.synapses_per_unit": ("spu", 0),
    "core.input_axons": _POS_INT,
    "core.output_axons": _POS_INT,
    "core.neuron_groups": _POS_INT,
    "core.weight_bits_max": _POS_INT,
    "messages.header_bits": _POS_INT,
    "messages.graded_payload_bits": _POS_INT,
    "messages.partial_sum_bits": _POS_INT,
    "messages.host_payload_bits": _POS_INT,
    "links.inter_core_bytes_per_s": _POS_NUM,
    "links.inter_chip_bytes_per_s": _POS_NUM,
    "links.host_bytes_per_s": _POS_NUM,
    "links.host_round_trip_s": ("num0", 0.0),
    "energy.synaptic_op_j": ("num0", 0.0),
    "energy.neuron_update_j": ("num0", 0.0),
    "energy.message_core_j": ("num0", 0.0),
    "energy.message_hop_j": ("num0", 0.0),
    "energy.message_inter_chip_j": ("num0", 0.0),
    "energy.static_power_w": ("num0", 0.0),
    "time.synaptic_op_s": ("num0", 0.0),
    "time.neuron_update_s": ("num0", 0.0),
    "time.message_hop_s": ("num0", 0.0),
    "time.barrier_s": ("num0", 0.0),
    "time.inter_chip_barrier_s": ("num0", 0.0),
}
SECTIONS = sorted({k.split(".")[0] for k in SCHEMA})
MAX_BITS = 8


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


@dataclass
class Profile:
    name: str
    description: str
    data: dict[str, Any]                       # resolved: section -> field -> leaf dict
    path: str | None = None
    chain: list[str] = field(default_factory=list)

    # -- access -------------------------------------------------------------------------------
    def leaf(self, key: str) -> dict:
        sec, name = key.split(".", 1)
        return self.data[sec][name]

    def __getitem__(self, key: str):
        return self.leaf(key)["value"]

    def synapses_per_unit(self, bits: int) -> float:
        return float(self["core.synapses_per_unit"][str(int(bits))])

    @property
    def chips(self) -> int:
        return int(self["system.chips"])

    @property
    def cores_per_chip(self) -> int:
        return int(self["chip.neurocores"])

    @property
    def total_cores(self) -> int:
        return self.chips * self.cores_per_chip

    def constants(self) -> dict[str, dict]:
        """Every figure with its unit, source and confidence, flat by field path."""
        return {f"{s}.{n}": copy.deepcopy(v) for s in sorted(self.data) for n, v in sorted(self.data[s].items())}

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "path": self.path,
                "extends_chain": self.chain, "constants": self.constants()}


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read hardware profile: {e.strerror or e}", path) from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"hardware profile is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                        path) from None
    if not isinstance(d, dict):
        raise UserError("hardware profile: the top level must be a JSON object", path)
    return d


def _resolve_ref(ref: str, relative_to: Path | None) -> Path:
    if ref in builtin_profiles():
        return PROFILE_DIR / f"{ref}.json"
    p = Path(ref)
    if not p.is_absolute() and relative_to is not None:
        p = relative_to.parent / p
    return p


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for sec, fields in over.items():
        if sec in ("format", "name", "description", "extends"):
            continue
        out.setdefault(sec, {})
        if isinstance(fields, dict) and isinstance(out[sec], dict):
            for k, v in fields.items():
                out[sec][k] = copy.deepcopy(v)
        else:
            out[sec] = copy.deepcopy(fields)
    return out


def _load_chain(path: Path, seen: tuple[str, ...]) -> tuple[dict, list[str]]:
    key = str(path.resolve())
    if key in seen:
        raise UserError(f"field 'extends': cycle through {path.name}", path)
    d = _read_json(path)
    fmt = d.get("format")
    if fmt != FORMAT:
        raise UserError(f"field 'format': expected {FORMAT!r}, got {fmt!r}", path)
    for k in ("name", "description"):
        if not isinstance(d.get(k), str) or not d[k].strip():
            raise UserError(f"field '{k}': missing or not a non-empty string", path)
    unknown = [k for k in d if k not in ("format", "name", "description", "extends") and k not in SECTIONS]
    if unknown:
        raise UserError(f"field '{unknown[0]}': unknown section (expected one of {', '.join(SECTIONS)})", path)
    for sec in SECTIONS:
        if sec in d and not isinstance(d[sec], dict):
            raise UserError(f"field '{sec}': must be an object of fields", path)
        for name in (d.get(sec) or {}):
            if f"{sec}.{name}" not in SCHEMA:
                raise UserError(f"field '{sec}.{name}': unknown field", path)
    ext = d.get("extends")
    if ext is None:
        return d, [d["name"]]
    if not isinstance(ext, str) or not ext:
        raise UserError("field 'extends': must be the name of a built-in profile or a file path", path)
    parent_path = _resolve_ref(ext, path)
    if not parent_path.is_file():
        raise UserError(f"field 'extends': no built-in profile or file {ext!r} "
                        f"(built-in: {', '.join(builtin_profiles())})", path)
    parent, chain = _load_chain(parent_path, seen + (key,))
    return _merge(parent, d), chain + [d["name"]]


def _check_leaf(key: str, leaf: Any, path) -> None:
    if not isinstance(leaf, dict):
        raise UserError(f"field '{key}': must be an object with value, unit, source and confidence", path)
    for k in ("value", "source", "confidence"):
        if k not in leaf:
            raise UserError(f"field '{key}': missing '{k}' (every value must carry its source and a "
                            "confidence note)", path)
    for k in ("source", "confidence"):
        if not isinstance(leaf[k], str) or not leaf[k].strip():
            raise UserError(f"field '{key}.{k}': must be a non-empty string", path)
    v = leaf["value"]
    kind, lo = SCHEMA[key]
    isnum = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "int":
        if not (isinstance(v, int) and not isinstance(v, bool)):
            raise UserError(f"field '{key}.value': must be an integer, got {v!r}", path)
        if v < lo:
            raise UserError(f"field '{key}.value': must be >= {lo}, got {v}", path)
    elif kind in ("num", "num0"):
        if not isnum or v != v or v in (float("inf"), float("-inf")):
            raise UserError(f"field '{key}.value': must be a finite number, got {v!r}", path)
        if kind == "num" and v <= lo:
            raise UserError(f"field '{key}.value': must be > 0, got {v}", path)
        if kind == "num0" and v < lo:
            raise UserError(f"field '{key}.value': must be >= 0, got {v}", path)
    elif kind == "mesh":
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
            raise UserError(f"field '{key}.value': must be [rows, columns] of positive integers, got {v!r}", path)
    elif kind == "spu":
        if not isinstance(v, dict):
            raise UserError(f"field '{key}.value': must map weight bits '1'..'{MAX_BITS}' to synapses per unit", path)
        missing = [str(b) for b in range(1, MAX_BITS + 1) if str(b) not in v]
        if missing:
            raise UserError(f"field '{key}.value': missing weight precision(s) {', '.join(missing)} bits", path)
        extra = [k for k in v if k not in {str(b) for b in range(1, MAX_BITS + 1)}]
        if extra:
            raise UserError(f"field '{key}.value': unknown key {extra[0]!r} (weight bits 1..{MAX_BITS})", path)
        prev = None
        for b in range(1, MAX_BITS + 1):
            x = v[str(b)]
            if not (isinstance(x, (int, float)) and not isinstance(x, bool)) or not x > 0:
                raise UserError(f"field '{key}.value.{b}': must be a positive number, got {x!r}", path)
            if prev is not None and x > prev:
                raise UserError(f"field '{key}.value.{b}': {x} synapses per unit at {b} bits is more than "
                                f"{prev} at {b - 1} bits (must not increase with precision)", path)
            prev = x


def validate(data: dict, path=None) -> None:
    for key in SCHEMA:
        sec, name = key.split(".", 1)
        if sec not in data or name not in data[sec]:
            raise UserError(f"field '{key}': missing", path)
        _check_leaf(key, data[sec][name], path)
    mesh = data["chip"]["mesh"]["value"]
    cores = data["chip"]["neurocores"]["value"]
    if mesh[0] * mesh[1] < cores:
        raise UserError(f"field 'chip.mesh.value': {mesh[0]}x{mesh[1]} mesh holds fewer than the "
                        f"{cores} neurocores", path)
    wmax = data["core"]["weight_bits_max"]["value"]
    if wmax > MAX_BITS:
        raise UserError(f"field 'core.weight_bits_max.value': {wmax} > {MAX_BITS} (synapses_per_unit "
                        f"is defined for 1..{MAX_BITS} bits)", path)


def load_profile(ref: str | os.PathLike | Profile) -> Profile:
    """A built-in profile name (`hala-point`) or a JSON file path → validated `Profile`."""
    if isinstance(ref, Profile):
        return ref
    ref_s = os.fspath(ref)
    if ref_s in builtin_profiles():
        path = PROFILE_DIR / f"{ref_s}.json"
    else:
        path = Path(ref_s)
        if not path.is_file():
            raise UserError(f"no such hardware profile (built-in: {', '.join(builtin_profiles())})", ref_s)
    data, chain = _load_chain(path, ())
    validate(data, path)
    top = _read_json(path)
    data = {sec: data[sec] for sec in SECTIONS}
    return Profile(name=top["name"], description=top["description"], data=data, path=str(path), chain=chain)
