"""Integer-emulator throughput: tokens/s for the tiny fixture and for the 0.9B configuration
(random weights generated on the fly, lowered, calibrated on a few tokens and quantized to 8 bits).

    python benchmarks/bench_emulator.py [--device cpu|cuda] [--skip-09b] [--tokens N]

Prints prefill and decode tokens/s at batch 1 with a short prompt, per model and device, and the
float IR interpreter's speed for comparison (the baseline the integer emulator is measured against).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


class RandomWeights(dict):
    """The NeuronSpark state dict, each tensor drawn on first access (spec §8 init, roughly)."""

    def __init__(self, cfg, seed=0):
        super().__init__()
        from ns_compile.models.neuronspark.shapes import shape_table
        self.shapes = shape_table(cfg)
        self.seed = seed

    def __missing__(self, k):
        shape = self.shapes[k]
        g = torch.Generator().manual_seed(self.seed * 1000003 + sum(map(ord, k)) * 7919 + len(k))
        if k.endswith("v_th"):
            x = torch.rand(shape, generator=g) * 0.4 + 0.1
        elif k.endswith(".w"):
            x = torch.randn(shape, generator=g) * 0.5
        elif k.endswith("b_beta"):
            x = torch.randn(shape, generator=g) * 0.5 + 2.0
        elif k.endswith("b_alpha"):
            x = torch.randn(shape, generator=g) * 0.1 + 0.54
        elif k.endswith("b_th"):
            x = torch.randn(shape, generator=g) * 0.02 + 0.1
        elif k.endswith("halt.bias"):
            x = torch.full(shape, -3.5)
        elif k.endswith("norm.weight") or k.endswith("gain"):
            x = torch.ones(shape)
        elif len(shape) == 2:
            x = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(shape[1])
            if "embed" in k:
                x = torch.randn(shape, generator=g) * 0.02
            elif "W_beta_x" in k or "W_alpha_x" in k or "W_th_x" in k:
                x = x * 0.1
        else:
            x = torch.randn(shape, generator=g) * 0.02
        return x


def bench(graph, device, prompt_len=4, new_tokens=4, label=""):
    from ns_compile.sim import Emulator
    emu = Emulator(graph, device=device)
    V = int(graph.config["vocab_size"])
    prompt = torch.arange(3, 3 + prompt_len) % V
    st = emu.new_state(1)
    with torch.inference_mode(), emu.threads():
        emu.forward(prompt[:1].unsqueeze(0), emu.new_state(1))     # warm-up (caches, CUDA context)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = emu.forward(prompt.unsqueeze(0), st)
        if device == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        tok = logits[0, -1].argmax()
        for _ in range(new_tokens):
            lg, st = emu.step(tok.reshape(1), st)
            tok = lg[0].argmax()
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
    r = {"model": label, "device": device, "mode": "int" if graph.quantized else "float",
         "prefill_tokens": prompt_len, "prefill_tok_s": round(prompt_len / (t1 - t0), 3),
         "decode_tokens": new_tokens, "decode_tok_s": round(new_tokens / (t2 - t1), 3),
         "s_per_token": round((t2 - t1) / new_tokens, 4)}
    del emu
    return r


def tiny_graphs():
    """The tiny fixture; without ../shared, random weights of the same shape (D=64, 2 layers)."""
    if not (FIXTURES / "neuronspark-tiny").exists():
        from ns_compile.lower.neuronspark import lower_neuronspark
        from ns_compile.models.neuronspark.config import NSConfig
        from ns_compile.quant import quantize
        cfg = NSConfig(vocab_size=6144, D=64, N=8, K=16, num_layers=2, D_ff=192)
        g = lower_neuronspark(cfg, RandomWeights(cfg))
        return g, quantize(g, torch.arange(3, 35).reshape(2, 16))[0]
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.quant import quantize
    ck = FIXTURES / "neuronspark-tiny" / "checkpoint"
    h = load_model(ck)
    g = lower_handle(h)
    ids = torch.tensor(json.loads((FIXTURES / "neuronspark-tiny" / "input_ids.json").read_text()))
    qg, _ = quantize(g, ids)
    return g, qg


def big_graph(calib_tokens=4, device="cpu"):
    from ns_compile.lower.neuronspark import lower_neuronspark
    from ns_compile.models.neuronspark.config import NSConfig
    from ns_compile.quant import quantize
    cfg = NSConfig(vocab_size=6144, D=896, N=8, K=16, num_layers=20, D_ff=2688)
    t0 = time.perf_counter()
    g = lower_neuronspark(cfg, RandomWeights(cfg))
    t1 = time.perf_counter()
    qg, rep = quantize(g, torch.arange(5, 5 + calib_tokens).unsqueeze(0), dtype=torch.float32, device=device)
    del g
    t2 = time.perf_counter()
    print(f"0.9B random: lowered in {t1 - t0:.1f} s, calibrated ({calib_tokens} tokens, float32) and quantized "
          f"in {t2 - t1:.1f} s; {qg.neuron_count():,} neurons, {qg.synapse_count():,} on-chip synapses", flush=True)
    return qg


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda", "both"], default="cpu")
    ap.add_argument("--skip-09b", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--tokens", type=int, default=4)
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA not available; CPU only")
        devices = ["cpu"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
    rows = []
    if not args.skip_tiny:
        g, qg = tiny_graphs()
        if "cuda" in devices:
            from ns_compile.sim import Emulator
            ids = torch.arange(3, 35).reshape(2, 16)
            a = Emulator(qg, "cpu").forward(ids)
            b = Emulator(qg, "cuda").forward(ids)
            print(f"tiny integer emulator, CPU vs CUDA logits bit-identical: {torch.equal(a, b)}", flush=True)
        for d in devices:
            rows.append(bench(g, d, 8, 16, "tiny (D=64, 2 layers)"))
            rows.append(bench(qg, d, 8, 16, "tiny (D=64, 2 layers)"))
            print(rows[-2], "\n", rows[-1], flush=True)
    if not args.skip_09b:
        qg = big_graph(device="cuda" if "cuda" in devices else "cpu")
        for d in devices:
            rows.append(bench(qg, d, 4, args.tokens, "0.9B config, random weights"))
            print(rows[-1], flush=True)
    print()
    print(f"{'model':<30} {'device':<6} {'mode':<6} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for r in rows:
        print(f"{r['model']:<30} {r['device']:<6} {r['mode']:<6} {r['prefill_tok_s']:>14} {r['decode_tok_s']:>13}")
    ints = [r for r in rows if r["mode"] == "int"]
    floats = {(r["model"], r["device"]): r for r in rows if r["mode"] == "float"}
    for r in ints:
        f = floats.get((r["model"], r["device"]))
        if f:
            print(f"integer emulator / float IR interpreter ({r['model']}, {r['device']}): "
                  f"{r['decode_tok_s'] / f['decode_tok_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
