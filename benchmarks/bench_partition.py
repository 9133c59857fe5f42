"""Benchmark: plan NeuronSpark-0.9B (shape-only, from its config) on Hala Point.

Prints, from one run: wall time of the plan (tiling + METIS placement + naive fill + evaluation),
peak resident memory of the process, chips used vs the lower bounds, and inter-chip traffic of the
METIS placement vs the naive sequential fill, with the ratios. Targets (issue #4): <= 60 s,
<= 3 GB peak, chips <= 1.10 x lower bound.

    .venv/bin/python benchmarks/bench_partition.py [--profile hala-point] [--weight-bits 8]
"""
from __future__ import annotations

import argparse
import resource
import time

CONFIG_09B = {"model_type": "neuronspark", "vocab_size": 6144, "D": 896, "N": 8, "K": 16, "num_layers": 20,
              "D_ff": 2688, "v_th_min": 0.1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="hala-point")
    ap.add_argument("--weight-bits", type=int, default=None)
    a = ap.parse_args()
    from ns_compile.lower.neuronspark import lower_neuronspark
    from ns_compile.partition import partition_graph

    t0 = time.perf_counter()
    g = lower_neuronspark(CONFIG_09B, None)
    t1 = time.perf_counter()
    res = partition_graph(g, a.profile, weight_bits=a.weight_bits)
    t2 = time.perf_counter()
    j = res.to_json()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9   # ru_maxrss is KiB on Linux
    n = j["naive"]
    print(f"NeuronSpark-0.9B (shape-only) on {a.profile}, weight bits {j['weight_bits']}: "
          f"{g.synapse_count():,} on-chip synapses, {j['tiles']} tiles")
    print(f"wall time        plan {t2 - t1:.1f} s (lowering {t1 - t0:.1f} s; tiling {j['timing_s']['tiling']:.1f}, "
          f"METIS {j['timing_s']['placement']:.1f}, naive {j['timing_s']['naive']:.1f}, "
          f"evaluate {j['timing_s']['evaluate']:.1f})   target <= 60 s")
    print(f"peak memory      {peak_gb:.2f} GB (process max RSS)   target <= 3 GB")
    print(f"chips            METIS {j['chips_used']}  naive {n['chips_used']}  lower bound {j['chips_lower_bound']} "
          f"(tiles) / {j['model_lower_bound']['chips']} (weights only)  ->  METIS/bound "
          f"{j['chips_used'] / j['chips_lower_bound']:.3f}, naive/bound {n['chips_used'] / j['chips_lower_bound']:.3f}"
          f"   target <= 1.10")
    print(f"cores            METIS {j['cores_used']}  naive {n['cores_used']}  lower bound {j['cores_lower_bound']} "
          f"({j['lower_bound_binding_budget']})")
    print(f"inter-chip       METIS {j['inter_chip_messages_per_token']:.4g} msgs/token "
          f"({j['inter_chip_bits_per_token']:.4g} b)  naive {n['inter_chip_messages_per_token']:.4g} msgs/token "
          f"({n['inter_chip_bits_per_token']:.4g} b)  ratio {j['inter_chip_messages_per_token'] / n['inter_chip_messages_per_token']:.3f}")
    off_m = j["inter_chip_messages_per_token"] + j["inter_core_messages_per_token"]
    off_n = n["inter_chip_messages_per_token"] + n["inter_core_messages_per_token"]
    print(f"off-core total   METIS {off_m:.4g}  naive {off_n:.4g} msgs/token  ratio {off_m / off_n:.3f}")
    print(f"latency/token    METIS {j['latency_s_per_token'] * 1e3:.1f} ms  naive {n['latency_s_per_token'] * 1e3:.1f} ms")
    print(f"energy/token     METIS {j['energy_j_per_token']:.3f} J  naive {n['energy_j_per_token']:.3f} J")


if __name__ == "__main__":
    main()
