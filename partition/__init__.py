"""ns_compile.partition: hardware profiles, tiling, placement (METIS) and the resource report.

    from ns_compile.partition import partition_graph, load_profile
    res = partition_graph(graph, "hala-point")          # or a Profile / a JSON file path
    res.to_json()["chips_used"]; print(res.render())

See docs/partition.md for the model, the algorithm choice and every assumption.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ns_compile.partition.profile import Profile, builtin_profiles, load_profile  # noqa: F401
from ns_compile.partition.tiling import BUDGETS, InfeasibleError, Tiling, build_tiling  # noqa: F401

__all__ = ["partition_graph", "PartitionResult", "load_profile", "builtin_profiles", "Profile",
           "InfeasibleError", "BUDGETS"]


def _json_metrics(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k not in ("core_utilization", "chip_matrix", "chip_ids", "core_ids")}


def model_lower_bound(graph, profile, weight_bits: dict[str, int]) -> dict:
    """Tiling-independent bound: the weights' synapse memory and the neurons alone."""
    units = sum(s.fan_in * s.fan_out / profile.synapses_per_unit(weight_bits[s.name])
                for s in graph.synapses.values())
    cores_syn = int(np.ceil(units / profile["core.synapse_memory_units"] - 1e-9))
    cores_neu = int(np.ceil(graph.neuron_count() / profile["core.neurons"] - 1e-9))
    cores = max(cores_syn, cores_neu, 1)
    return {"cores": cores, "chips": -(-cores // profile.cores_per_chip),
            "synapse_memory_cores": cores_syn, "neuron_cores": cores_neu,
            "synapses_on_chip": int(graph.synapse_count())}


@dataclass
class PartitionResult:
    graph_info: dict
    profile: Profile
    tiling: Tiling
    placement: Any
    naive: Any
    metrics: dict
    naive_metrics: dict
    host: dict
    lower_bound: dict
    model_bound: dict
    timing: dict
    assumptions: list[str] = field(default_factory=list)

    @property
    def chips_used(self) -> int:
        return self.metrics["chips_used"]

    @property
    def cores_used(self) -> int:
        return self.metrics["cores_used"]

    def tile_table(self) -> dict:
        """Tile -> (population, rows, column chunk, core); enough for a backend to build the map."""
        t = self.tiling
        return {"populations": [pt.to_json() for pt in t.pops],
                "tile_population": t.tile_pop.tolist(), "tile_row0": t.tile_row0.tolist(),
                "tile_rows": t.tile_rows.tolist(), "tile_chunk": t.tile_chunk.tolist(),
                "tile_core": self.placement.core_of_tile.tolist(), "tile_chip": self.placement.chip_of_tile.tolist()}

    def to_json(self, include_map: bool = False) -> dict:
        m = _json_metrics(self.metrics)
        lat = m["latency_s_per_token"] + self.host["host_link_s_per_token"]
        j = {
            "format": "ns-compile-plan/1",
            "graph": self.graph_info,
            "profile": {"name": self.profile.name, "path": self.profile.path, "chips": self.profile.chips,
                        "cores_per_chip": self.profile.cores_per_chip, "extends_chain": self.profile.chain},
            "weight_bits": sorted(set(self.tiling.weight_bits.values())),
            "tiles": self.tiling.n_tiles,
            "chips_used": m["chips_used"],
            "chips_lower_bound": self.lower_bound["chips"],
            "cores_used": m["cores_used"],
            "cores_lower_bound": self.lower_bound["cores"],
            "lower_bound_binding_budget": self.lower_bound["binding_budget"],
            "lower_bound_cores_per_budget": self.lower_bound["per_budget"],
            "model_lower_bound": self.model_bound,
            **{k: v for k, v in m.items() if k not in ("chips_used", "cores_used")},
            "latency_s_per_token": lat,
            "tokens_per_s": 1.0 / lat if lat > 0 else None,
            "host": self.host,
            "naive": {**_json_metrics(self.naive_metrics),
                      "latency_s_per_token": self.naive_metrics["latency_s_per_token"]
                      + self.host["host_link_s_per_token"]},
            "populations": [pt.to_json() for pt in self.tiling.pops],
            "constants": self.profile.constants(),
            "assumptions": self.assumptions,
            "timing_s": self.timing,
        }
        if include_map:
            j["map"] = self.tile_table()
        return j

    def to_dict(self) -> dict:
        """The full JSON, tile → core map included (what `compile --hardware` stores)."""
        return self.to_json(include_map=True)

    def render(self) -> str:
        from ns_compile.partition.report import render_table
        return render_table(self)

    def write_report(self, out_dir) -> list[str]:
        from ns_compile.partition.report import write_report
        return write_report(self, out_dir)


def partition_graph(graph, profile, activity: dict | None = None, weight_bits: int | None = None,
                    seed: int = 1) -> PartitionResult:
    """Tile, place (METIS, hierarchical) and evaluate `graph` on `profile`; also the naive
    sequential fill of the same tiles for comparison. Raises InfeasibleError (a UserError) naming
    the budget, the place and the excess when the model cannot be mapped."""
    from ns_compile.partition.metrics import evaluate, host_side
    from ns_compile.partition.placement import CSR, lower_bound_cores, place_metis, place_naive

    t0 = time.perf_counter()
    prof = load_profile(profile)
    if weight_bits is not None and not 1 <= int(weight_bits) <= int(prof["core.weight_bits_max"]):
        from ns_compile.errors import UserError
        raise UserError(f"--weight-bits {weight_bits}: the profile supports 1..{prof['core.weight_bits_max']} bits")
    tiling = build_tiling(graph, prof, activity=activity, weight_bits=weight_bits)
    t1 = time.perf_counter()
    lb_cores, binding, per = lower_bound_cores(tiling)
    mb = model_lower_bound(graph, prof, tiling.weight_bits)
    if lb_cores > prof.total_cores:
        from ns_compile.partition.placement import _too_big
        raise _too_big(tiling, prof, -(-lb_cores // prof.cores_per_chip))
    csr = CSR(tiling.n_tiles, tiling.e_src, tiling.e_dst, tiling.e_msgs * tiling.e_bits)
    pl = place_metis(tiling, prof, csr, seed=seed)
    del csr
    t2 = time.perf_counter()
    nv = place_naive(tiling, prof)
    t3 = time.perf_counter()
    ev = evaluate(tiling, pl, prof, graph)
    ev_n = evaluate(tiling, nv, prof, graph)
    host = host_side(graph, tiling, prof)
    t4 = time.perf_counter()
    assumptions = list(tiling.assumptions) + [
        "messages: one per (neuron, destination core) output axon, no multicast on the mesh; a binary spike is "
        f"{prof['messages.header_bits']} bits, a graded one adds its payload, a partial sum "
        f"{prof['messages.partial_sum_bits']} bits; energy and link time scale with bits",
        "latency: stages run one after another (each needs the previous stage's host update); a step lasts "
        "max(barrier, slowest core's synaptic+neuron work, busiest inter-chip link, busiest core link); "
        "K frames + the stage's synapse depth (+1 where fan-in is split) steps per stage, plus one host "
        "round trip per stage",
        "energy: Loihi 1 per-op figures (no Loihi 2 figures are public) plus static power x chips x latency; "
        "host CPU work is not included",
    ]
    info = {"family": graph.family, "populations": len(graph.populations), "synapse_groups": len(graph.synapses),
            "neurons": int(graph.neuron_count()), "synapses": int(graph.synapse_count()),
            "stages": len(graph.stages), "quantized": bool(graph.quantized),
            "shape_only": bool(graph.meta.get("shape_only", False))}
    return PartitionResult(
        graph_info=info, profile=prof, tiling=tiling, placement=pl, naive=nv, metrics=ev, naive_metrics=ev_n,
        host=host,
        lower_bound={"cores": lb_cores, "chips": -(-lb_cores // prof.cores_per_chip), "binding_budget": binding,
                     "per_budget": {BUDGETS[i]: int(x) for i, x in enumerate(per)}},
        model_bound=mb,
        timing={"tiling": t1 - t0, "placement": t2 - t1, "naive": t3 - t2, "evaluate": t4 - t3,
                "total": time.perf_counter() - t0},
        assumptions=assumptions)
