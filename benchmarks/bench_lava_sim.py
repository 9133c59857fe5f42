"""Lava CPU simulator vs the integer emulator on one model, from one run.

usage: python benchmarks/bench_lava_sim.py [CHECKPOINT] [--tokens N] [--prompt-len P]

Compiles CHECKPOINT (default ../shared/fixtures/neuronspark-tiny/checkpoint) to a quantized graph
(lower + quantize on its own input ids), then generates N greedy tokens with
  - the integer emulator (sim/, CPU)               -> tokens/s, ms/token
  - Lava fixed point, fused granularity            -> ms/token (steady state, compile excluded)
  - Lava fixed point, per-population granularity   -> ms/token
and prints the ratios (Lava ms/token ÷ emulator ms/token) and whether all three produced the same
tokens. All code runs under main(): Lava's compiler may exec sibling modules of a Process defined
in a script, so nothing here runs at import.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "fixtures" / "neuronspark-tiny" / "checkpoint"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default=str(DEFAULT))
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=4)
    a = ap.parse_args()

    import torch

    from ns_compile.backends.lava import run_artifact
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.quant import quantize
    from ns_compile.sim import Emulator

    ck = Path(a.checkpoint)
    ids_file = ck.parent / "input_ids.json"
    calib = json.loads(ids_file.read_text()) if ids_file.exists() else [[1, 2, 3, 4, 5, 6, 7, 8]]
    qg, _ = quantize(lower_handle(load_model(ck)), torch.tensor(calib))
    prompt = calib[0][: a.prompt_len]
    n_tok = len(prompt) + a.tokens - 1          # tokens pushed through the network

    em = Emulator(qg)
    em.generate(prompt, max_new_tokens=2)        # warm-up
    t0 = time.perf_counter()
    emu_ids = em.generate(prompt, max_new_tokens=a.tokens, temperature=0)
    emu_s = time.perf_counter() - t0
    emu_ms = 1e3 * emu_s / n_tok

    rows = {}
    for gran in ("fused", "population"):
        r = run_artifact(qg, prompt, granularity=gran, max_new_tokens=a.tokens, return_info=True, timeout_s=1800)
        rows[gran] = r

    print(f"model {ck} ({qg.neuron_count()} neurons, {qg.synapse_count()} synapses, {len(qg.stages)} stages); "
          f"{n_tok} tokens through the network ({len(prompt)} prompt + {a.tokens} generated), 2 CPU cores")
    print(f"{'engine':28s} {'ms/token':>10s} {'tokens/s':>10s} {'steps/tok':>10s} {'ms/step':>9s} "
          f"{'procs':>6s} {'compile s':>9s} {'× emulator':>11s}")
    print(f"{'emulator (sim, CPU)':28s} {emu_ms:10.2f} {1e3 / emu_ms:10.2f} {'-':>10s} {'-':>9s} {'-':>6s} "
          f"{'-':>9s} {1.0:11.1f}")
    for gran, r in rows.items():
        ms = r["ms_per_token"]
        print(f"{'Lava sim fixed, ' + gran:28s} {ms:10.2f} {1e3 / ms:10.2f} {r['steps_per_token']:10d} "
              f"{ms / r['steps_per_token']:9.2f} {r['processes']:6d} {r['compile_s']:9.2f} {ms / emu_ms:11.1f}")
    print(f"population ÷ fused: {rows['population']['ms_per_token'] / rows['fused']['ms_per_token']:.1f}×")
    same = emu_ids == rows["fused"]["ids"] == rows["population"]["ids"]
    print(f"identical tokens (emulator, fused, population): {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
