"""Quantization fidelity of the shipped demo models at 8-bit and 4-bit on-chip weights.

    .venv/bin/python benchmarks/bench_fidelity.py [--models neuronspark,nord] [--bits 8,4]
        [--windows 4] [--window 128]

One run: for each demo model (examples/), compile it at each weight width with the demo's
calibration (the first ~4000 characters of examples/data/heldout.txt; `compile_checkpoint`), then
run the fp32 reference and the integer emulator (bit-exact to Lava's fixed-point models) on
`--windows` windows of `--window` held-out tokens taken from the second half of heldout.txt
(disjoint from the calibration slice; each window from fresh state) and compare them
(`ns_compile.verify.metrics.compare_traces`). Prints per model and width: top-1 agreement with
fp32, mean KL, perplexity fp32 vs quantized and their ratio, and the 4-bit / 8-bit ratios.
Nord runs only when its lowering is available.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="neuronspark,nord")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window", type=int, default=128)
    a = ap.parse_args(argv)

    import torch

    from ns_compile.cli.compile_cmd import compile_checkpoint
    from ns_compile.cli.demo_cmd import check_family_support, demo_paths, text_slices
    from ns_compile.errors import UserError
    from ns_compile.verify.metrics import compare_traces
    from ns_compile.verify.stages import open_artifact, open_checkpoint, run_stage

    bits = [int(b) for b in a.bits.split(",")]
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f}; "
          f"Python {platform.python_version()}, torch {torch.__version__}", flush=True)
    results = {}
    for model in [m.strip() for m in a.models.split(",") if m.strip()]:
        try:
            check_family_support(model)
        except UserError as e:
            print(f"{model}: skipped ({e})")
            continue
        ckpt, heldout = demo_paths(model)
        ref = open_checkpoint(ckpt)
        h = ref.handle
        W = a.window
        if getattr(h.config, "max_seq_len", None):
            W = min(W, int(h.config.max_seq_len))
        with tempfile.TemporaryDirectory(prefix="ns-bench-fid-") as tmp:
            tmp = Path(tmp)
            cal, ev, sl = text_slices(heldout, tmp, eval_chars=int(W * a.windows * 6))
            ids = h.encode_prompt(ev.read_text(encoding="utf-8"))
            if len(ids) < W * a.windows:
                raise SystemExit(f"held-out slice too short: {len(ids)} tokens")
            rows = [ids[i * W:(i + 1) * W] for i in range(a.windows)]
            t0 = time.perf_counter()
            ref_t = run_stage("reference", ref, rows)
            print(f"{model}: fp32 reference on {a.windows} x {W} held-out tokens (heldout.txt chars "
                  f"{sl['eval_chars'][0]}..) in {time.perf_counter() - t0:.1f} s", flush=True)
            for b in bits:
                art = tmp / f"{model}-w{b}.nsa"
                t0 = time.perf_counter()
                compile_checkpoint(str(ckpt), str(art), weight_bits=b, calibration=str(cal))
                t1 = time.perf_counter()
                emu_t = run_stage("emulator", open_artifact(art), rows)
                t2 = time.perf_counter()
                r = compare_traces(ref_t, emu_t)
                p = r["perplexity"]
                results[(model, b)] = {"top1": r["top1_agreement"], "kl": r["kl"], "ppl_ref": p["a"],
                                       "ppl_q": p["b"]}
                print(f"{model}: {b}-bit compiled in {t1 - t0:.1f} s, emulator in {t2 - t1:.1f} s", flush=True)
    print()
    print(f"{'model':<12} {'bits':>4} {'top-1 vs fp32':>13} {'KL (nats)':>10} {'ppl fp32':>9} {'ppl quant':>10} "
          f"{'ppl ratio':>9}")
    for (model, b), x in results.items():
        print(f"{model:<12} {b:>4} {100 * x['top1']:>12.1f}% {x['kl']:>10.4f} {x['ppl_ref']:>9.2f} {x['ppl_q']:>10.2f} "
              f"{x['ppl_q'] / x['ppl_ref']:>9.3f}")
    for model in dict.fromkeys(m for m, _ in results):
        have = sorted((b for m, b in results if m == model), reverse=True)
        if len(have) >= 2:
            hi, lo = results[(model, have[0])], results[(model, have[-1])]
            print(f"{model}: {have[-1]}-bit vs {have[0]}-bit: top-1 disagreement "
                  f"{(1 - lo['top1']) / max(1 - hi['top1'], 1e-9):.2f}x, KL {lo['kl'] / max(hi['kl'], 1e-12):.2f}x, "
                  f"perplexity increase {100 * (lo['ppl_q'] / lo['ppl_ref'] - 1):+.1f}% vs "
                  f"{100 * (hi['ppl_q'] / hi['ppl_ref'] - 1):+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
