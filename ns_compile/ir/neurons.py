"""Neuron types known to the IR. Pluggable: a frontend that needs a new neuron adds a
`NeuronType` here and its section to docs/fixed_point.md; the emulator and the backends look
the type up by name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeuronType:
    name: str
    ports: tuple[str, ...]           # graded input ports, in the order the contract lists them
    state: tuple[str, ...]           # state carried across frames and tokens (zero per sequence)
    params: tuple[str, ...]          # per-neuron or shared parameters
    doc: str                         # section of docs/fixed_point.md that defines it
    stock_lava: str | None = None    # a stock Lava process that implements it exactly, if any
    # Needs a custom Loihi 2 microcode neuron on hardware (no stock NcProcessModel exists).
    custom_microcode: bool = True


NEURON_TYPES: dict[str, NeuronType] = {t.name: t for t in [
    NeuronType("plif_static", ("I",), ("V",), ("B", "TH"), "§3.1"),
    NeuronType("plif_selective", ("I", "XB", "XA", "XT"), ("V",), ("BB", "BA", "BT", "VTHMIN"), "§3.2"),
    NeuronType("gated_readout", ("R", "G", "Q"), (), (), "§3.3"),
    NeuronType("product", ("X1", "X2"), (), ("exp",), "§3.4", stock_lava="lava.proc.prodneuron.process.ProdNeuron",
               custom_microcode=False),
    NeuronType("accumulate", ("A",), (), (), "§3.5"),
    # Nord AssociativeLIF: port I (feed-forward / host drive), port C (the recurrent cascade group,
    # one frame of delay); state reset at frame 0 of every token (rows are independent).
    NeuronType("lif_nord", ("I", "C"), ("U", "V", "R"), ("BS", "BM", "TH", "VRESET", "RT"), "§7.2"),
]}
