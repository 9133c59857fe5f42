"""Time-step schedule of a graph on Lava (docs/fixed_point.md §6, docs/lava_backend.md).

Pure Python, no Lava import. Steps are counted from the step at which the host process receives
a token (relative step r = 0); a token takes `period` steps, token n starts at Lava time step
1 + n·period (Lava's `time_step` starts at 1).

Per stage i with K_i frames the host sends the drive from relative step o_i on; a population p of
the stage processes frame k at relative step o_i + k + depth(p), where depth is the IR depth in
the per-population granularity (one step per Dense) and 0 in the fused granularity (the whole
stage in one process, no internal delays). The host receives the readout in the same step the
readout population sends it, aggregates after the last frame (step e_i) and starts the next stage
at e_i + 1 (a process sends before it receives within a step). After the last stage the logits go
out one step later, and the next token is injected the step after that.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ns_compile.errors import UserError


@dataclass
class StagePlan:
    name: str
    index: int
    frames: int                     # K
    offset: int                     # o_i: relative step of the drive's first frame
    depth: dict[str, int]           # population -> effective depth (0 everywhere when fused)
    readout: str
    readout_depth: int
    # population -> {port: early delay}: synapse groups that arrive `delay` steps before the
    # receiving population is active on that frame and are buffered by the receiver (per-population)
    early: dict[str, dict[str, int]] = field(default_factory=dict)
    early_synapses: dict[str, int] = field(default_factory=dict)   # synapse name -> delay

    @property
    def end(self) -> int:
        """Relative step at which the last readout frame reaches the host."""
        return self.offset + self.readout_depth + self.frames - 1

    def active_offset(self, pop: str) -> int:
        return self.offset + self.depth[pop]


@dataclass
class Plan:
    granularity: str
    period: int
    stages: list[StagePlan]
    logits_step: int                # relative step at which the logits leave the host process

    def stage(self, name: str) -> StagePlan:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def frame_step(self, token: int, stage: StagePlan, pop: str, k: int) -> int:
        """Lava time step (1-based) at which `pop` processes frame k of `token`."""
        return 1 + token * self.period + stage.active_offset(pop) + k


def synapse_delay(graph, syn) -> int:
    """Delay buffer (steps) a synapse group needs in the per-population view (§6)."""
    if syn.src.startswith("host:"):
        raise UserError(f"synapse group {syn.name}: host-sourced synapse groups are not supported by the "
                        "Lava backend (the host drive goes straight into port I)")
    d_src = graph.populations[syn.src].depth
    d_dst = graph.populations[syn.dst].depth
    d = d_dst - 1 - d_src
    if d < 0:
        raise UserError(f"synapse group {syn.name}: depth({syn.dst})={d_dst} is not after "
                        f"depth({syn.src})={d_src} + 1 (IR depths inconsistent)")
    rec = syn.meta.get("delay")
    if rec is not None and int(rec) != d:
        raise UserError(f"synapse group {syn.name}: meta delay {rec} != depth difference {d}")
    return d


def make_plan(graph, granularity: str) -> Plan:
    if granularity not in ("fused", "population"):
        raise UserError(f"unknown granularity {granularity!r} (fused | population)")
    fused = granularity == "fused"
    stages = []
    r = 1                                            # token received at r=0, first drive at r=1
    for i, st in enumerate(graph.stages):
        depth = {p: (0 if fused else int(graph.populations[p].depth)) for p in st.populations}
        sp = StagePlan(st.name, i, int(st.frames), r, depth, st.readout, depth[st.readout])
        if not fused:
            for p in st.populations:
                for syn in graph.inputs_of(p):
                    d = synapse_delay(graph, syn)
                    if d == 0:
                        continue
                    have = sp.early.setdefault(p, {})
                    if have.get(syn.dst_port, d) != d:
                        raise UserError(f"population {p} port {syn.dst_port}: synapse groups with two different "
                                        "non-zero delays into one port are not supported by the Lava backend")
                    have[syn.dst_port] = d
                    sp.early_synapses[syn.name] = d
                for dl in graph.directs_into(p):
                    if graph.populations[dl.src].depth != graph.populations[p].depth:
                        raise UserError(f"direct link {dl.src}->{p}: unequal depths need a delay buffer, "
                                        "which direct (product) inputs do not have")
        stages.append(sp)
        r = sp.end + 1
    logits_step = r                                   # = last stage's end + 1
    return Plan(granularity, logits_step + 1, stages, logits_step)
