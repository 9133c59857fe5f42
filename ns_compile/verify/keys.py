"""Canonical names of everything a trace records, shared by every stage so stages pair up.

    layers.{l}.block.input      plif_static   input_neuron1 (D)           per frame
    layers.{l}.block.hidden     plif_selective SNNBlock hidden (D*N)       per frame
    layers.{l}.block.readout    gated_readout  SNNBlock frame output f (D) per frame
    layers.{l}.block.aggregate  host          PonderNet aggregate (D)     per token
    layers.{l}.block.residual   host          residual after sublayer 1   per token
    layers.{l}.ffn.input        plif_static   input_neuron2 (D)           per frame
    layers.{l}.ffn.gate         plif_static   gate_neuron (D_ff)          per frame
    layers.{l}.ffn.up           plif_static   up_neuron (D_ff)            per frame
    layers.{l}.ffn.product      product       V_gate * V_up (D_ff)        per frame
    layers.{l}.ffn.readout      accumulate    SNNFFN frame output f (D)   per frame
    layers.{l}.ffn.aggregate / .residual      as for the block            per token
    decode.output               plif_static   output_neuron (D)           per frame

Units are the float model's: a membrane potential is V (the (1-β) input/leak factors that the
lowering folds into weights do not change V), a product is V_gate·V_up (docs/fixed_point.md
§3.4), a readout is the sublayer's frame output f. Integer stages de-quantize with their fracs.

IR populations are mapped to these keys by `canonical_key`: `Population.meta["trace_key"]` when
the lowering sets it, otherwise from the population's stage, kind and name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SUBLAYERS = ("block", "ffn")
# population order inside a sublayer (dataflow order) and the token-level values after it
FRAME_POPS = {"block": ("input", "hidden", "readout"), "ffn": ("input", "gate", "up", "product", "readout")}
TOKEN_VALUES = ("aggregate", "residual")
SPIKING_KINDS = ("plif_static", "plif_selective")

_KEY_RE = re.compile(r"^layers\.(\d+)\.(block|ffn)\.(\w+)$")


@dataclass(frozen=True)
class KeyInfo:
    key: str
    layer: int | None        # None for decode.*
    sublayer: str            # "block" | "ffn" | "decode" | "?"
    name: str                # "hidden", "gate", ...

    @property
    def stage(self) -> str:
        """The on-chip stage (K frames between two host ops) the key belongs to."""
        return "decode" if self.layer is None else f"layers.{self.layer}.{self.sublayer}"


def parse_key(key: str) -> KeyInfo:
    m = _KEY_RE.match(key)
    if m:
        return KeyInfo(key, int(m.group(1)), m.group(2), m.group(3))
    if key.startswith("decode."):
        return KeyInfo(key, None, "decode", key.split(".", 1)[1])
    return KeyInfo(key, None, "?", key)


def execution_rank(key: str) -> tuple:
    """Sort key of the stage a key belongs to, in per-token execution order."""
    k = parse_key(key)
    if k.layer is not None:
        pops = FRAME_POPS[k.sublayer] + TOKEN_VALUES
        return (0, k.layer, SUBLAYERS.index(k.sublayer), pops.index(k.name) if k.name in pops else len(pops))
    if k.sublayer == "decode":
        return (1, 0, 0, 0)
    return (2, 0, 0, 0)


def sort_keys(keys) -> list[str]:
    return sorted(keys, key=lambda k: (execution_rank(k), k))


# ---- IR population names -> canonical keys --------------------------------------------------------

# ns_compile.lower.neuronspark: "L{l}.block.in|hid|out", "L{l}.ffn.in|gate|up|prod|out", "decode.out"
_IR_RE = re.compile(r"^(?:L(\d+)\.(block|ffn)\.(in|hid|out|gate|up|prod)|decode\.out)$")
_IR_SHORT = {"in": "input", "hid": "hidden", "out": "readout", "prod": "product"}
# host values the emulator reports per token, by IR host-op name -> canonical
_IR_HOST_RE = re.compile(r"^L(\d+)\.(block|ffn)\.ponder(?:\.(\w+))?$")

_LAYER_RE = re.compile(r"(?:layers?|blk|L)[._/\-]?(\d+)", re.IGNORECASE)


def _sublayer_of(text: str) -> str | None:
    t = text.lower()
    if re.search(r"ffn|mlp|sub(?:layer)?[._]?2|input_neuron2", t):
        return "ffn"
    if re.search(r"block|attn|sub(?:layer)?[._]?1|input_neuron1", t):
        return "block"
    return None


def canonical_key(pop, graph=None) -> str:
    """Canonical key of an IR `Population` (see the module docstring)."""
    meta = getattr(pop, "meta", None) or {}
    if meta.get("trace_key"):
        return str(meta["trace_key"])
    name = pop.name
    if _KEY_RE.match(name) or name == "decode.output":
        return name
    m = _IR_RE.match(name)                      # the NeuronSpark lowering's names (ns_compile/lower)
    if m:
        if m.group(1) is None:
            return "decode.output"
        return f"layers.{m.group(1)}.{m.group(2)}.{_IR_SHORT.get(m.group(3), m.group(3))}"
    low = name.lower()
    stage_name = getattr(pop, "stage", "") or ""
    both = f"{stage_name} {name}"
    if "output_neuron" in low or "decode" in both.lower() or re.search(r"(^|[._/])output([._/]|$)", low) \
            and _LAYER_RE.search(both) is None:
        return "decode.output"
    m = _LAYER_RE.search(name) or _LAYER_RE.search(stage_name)
    sub = _sublayer_of(name) or _sublayer_of(stage_name)
    kind = getattr(pop, "kind", "")
    if sub is None:
        sub = {"plif_selective": "block", "gated_readout": "block", "product": "ffn", "accumulate": "ffn"}.get(kind)
    if m is None or sub is None:
        return name                     # unknown: stays under its own name (still pairs by name)
    layer = int(m.group(1))
    if kind == "plif_selective" or "hidden" in low:
        pop_name = "hidden"
    elif kind in ("gated_readout", "accumulate") or "readout" in low:
        pop_name = "readout"
    elif kind == "product" or "prod" in low:
        pop_name = "product"
    elif re.search(r"gate", low):
        pop_name = "gate"
    elif re.search(r"(^|[._/])up", low):
        pop_name = "up"
    elif "input" in low or (graph is not None and _is_drive_target(graph, pop.name)):
        pop_name = "input"
    else:
        return name
    return f"layers.{layer}.{sub}.{pop_name}"


def _is_drive_target(graph, name: str) -> bool:
    return any(name in st.drive_targets for st in getattr(graph, "stages", []))
