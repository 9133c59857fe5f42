"""Typed graph: neuron populations, synapse groups, direct (synapse-free) links, host ops and
the per-token schedule.

Before quantization parameters and weights are float arrays with every constant factor already
folded (ns_compile/lower/). After quantization (ns_compile/quant/) the same objects carry integer
arrays plus their fracs (`fmt`), exactly as docs/fixed_point.md names them, and `Graph.quantized`
is True. The emulator, the partitioner and the backends only read this structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ns_compile.ir.neurons import NEURON_TYPES


@dataclass
class Population:
    """A group of neurons of one type, updated K times per token in its stage."""
    name: str
    kind: str                                  # key of NEURON_TYPES
    size: int
    stage: str                                 # Stage.name
    params: dict[str, np.ndarray] = field(default_factory=dict)
    depth: int = 0                             # synapse hops from the stage's host drive (schedule, §6)
    # After quantization: fracs of state / ports / payload, e.g. {"V": 18, "I": 18, "P": 10}
    # and payload width {"payload_bits": 16}.
    fmt: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self):
        return NEURON_TYPES[self.kind]


@dataclass
class Synapse:
    """A dense synapse group: dst.port += W @ payload(src). `src` is a population name or a host
    port "host:<name>". weight is [dst.size, src_size]."""
    name: str
    src: str
    dst: str
    dst_port: str
    # float (folded) before quantization; int mantissas M after; None in a shape-only graph
    # (planning from config.json, no weights), where `shape` alone describes the group.
    weight: np.ndarray | None
    input_kind: str = "graded"                 # "graded" | "binary"
    shape: tuple[int, int] | None = None       # (fan_out, fan_in); filled from weight when None
    # After quantization: {"bits": b, "f_W": .., "f_S": .., "f_A": ..}; weight_exp follows (§2).
    fmt: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.shape is None:
            assert self.weight is not None, f"{self.name}: need weight or shape"
            self.shape = tuple(int(x) for x in self.weight.shape)

    @property
    def fan_in(self) -> int:
        return self.shape[1]

    @property
    def fan_out(self) -> int:
        return self.shape[0]

    def weight_exp(self) -> int:
        """Lava Dense weight_exp for the stored mantissas M·2^(9-b) (docs/fixed_point.md §2)."""
        f = self.fmt
        return f["f_A"] - (f["f_W"] + f["f_S"] + 9 - f["bits"])


@dataclass
class Direct:
    """A synapse-free connection (no delay): dst.port receives src's payload element-wise."""
    src: str
    dst: str
    dst_port: str


@dataclass
class HostOp:
    """An op that runs on the host (or the chips' embedded x86 cores), per token."""
    name: str
    kind: str                                  # embedding | rmsnorm_drive | ponder_residual | decode | lm_head | sample
    inputs: list[str]
    outputs: list[str]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    fmt: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """K frames of on-chip work between two host ops: host drive in, frame readout out."""
    name: str
    frames: int                                # K
    drive: str                                 # host op that computes the constant drive
    drive_targets: list[str]                   # populations (port "I") that receive the drive
    populations: list[str]                     # dataflow order
    readout: str                               # population whose payloads go to the host per frame
    after: str                                 # host op that consumes the K readouts
    # Nord (docs/fixed_point.md §7): the drive op returns one vector per frame [K, B, n] instead of
    # a constant [B, n]; synapse groups with src "host:<drive op>" take its per-frame payload.
    drive_per_frame: bool = False
    # every population read out to the host per frame (empty: [readout])
    readouts: list[str] = field(default_factory=list)

    def host_readouts(self) -> list[str]:
        return list(self.readouts) or [self.readout]


@dataclass
class Graph:
    family: str
    config: dict[str, Any]
    populations: dict[str, Population] = field(default_factory=dict)
    synapses: dict[str, Synapse] = field(default_factory=dict)
    directs: list[Direct] = field(default_factory=list)
    host_ops: dict[str, HostOp] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    # Per token: the host ops and stages in execution order (names).
    program: list[str] = field(default_factory=list)
    quantized: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    # -- construction helpers -------------------------------------------------------------
    def add_population(self, p: Population) -> Population:
        assert p.name not in self.populations, p.name
        assert p.kind in NEURON_TYPES, p.kind
        self.populations[p.name] = p
        return p

    def add_synapse(self, s: Synapse) -> Synapse:
        assert s.name not in self.synapses, s.name
        self.synapses[s.name] = s
        return s

    def add_host_op(self, h: HostOp) -> HostOp:
        assert h.name not in self.host_ops, h.name
        self.host_ops[h.name] = h
        return h

    # -- queries ----------------------------------------------------------------------------
    def inputs_of(self, pop: str) -> list[Synapse]:
        return [s for s in self.synapses.values() if s.dst == pop]

    def directs_into(self, pop: str) -> list[Direct]:
        return [d for d in self.directs if d.dst == pop]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def neuron_count(self) -> int:
        return sum(p.size for p in self.populations.values())

    def synapse_count(self) -> int:
        return sum(s.fan_in * s.fan_out for s in self.synapses.values())

    def validate(self) -> None:
        """Structural checks every pass may rely on."""
        names = set(self.populations)
        for s in self.synapses.values():
            assert s.dst in names, f"{s.name}: unknown dst {s.dst}"
            assert s.dst_port in self.populations[s.dst].type.ports, f"{s.name}: bad port {s.dst_port}"
            assert s.fan_out == self.populations[s.dst].size, f"{s.name}: rows != dst size"
            if not s.src.startswith("host:"):
                assert s.src in names, f"{s.name}: unknown src {s.src}"
                assert s.fan_in == self.populations[s.src].size, f"{s.name}: cols != src size"
        for d in self.directs:
            assert d.src in names and d.dst in names
        for st in self.stages:
            for p in st.populations:
                assert self.populations[p].stage == st.name

