"""Compile time and peak memory of `ns-compile compile` on a NeuronSpark checkpoint of the 0.9B size.

    .venv/bin/python benchmarks/bench_compile.py [--size 0.9b|0.45b|0.2b|tiny] [--calibration-tokens 16]
        [--keep DIR]

One run: writes a NeuronSpark checkpoint with random weights in the Hugging Face layout
(config.json + model.safetensors, fp32: 3.50 GB for 0.9B, streamed tensor by tensor so the writer
needs ~one tensor of memory) into a temporary folder, then runs the real command line
`python -m ns_compile compile CKPT -o ART --calibration ids.json` in a child process and samples
the child's resident memory (/proc/PID/status VmRSS, every 0.2 s; VmHWM at exit). Prints the
compile wall time and the peak RSS, and the ratios peak RSS / checkpoint bytes and
artifact bytes / checkpoint bytes. The checkpoint has no tokenizer, so calibration uses
`--calibration-tokens` fixed pseudo-random ids (a .json id file).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZES = {   # NeuronSpark-0.9B is D 896, N 8, K 16, 20 layers, D_ff 2688, vocab 6144 (874,142,120 parameters)
    "0.9b": dict(vocab_size=6144, D=896, N=8, K=16, num_layers=20, D_ff=2688),
    "0.45b": dict(vocab_size=6144, D=896, N=8, K=16, num_layers=10, D_ff=2688),
    "0.2b": dict(vocab_size=6144, D=896, N=8, K=16, num_layers=4, D_ff=2688),
    "tiny": dict(vocab_size=512, D=64, N=4, K=8, num_layers=2, D_ff=192),
}


def _init(key: str, shape, rng) -> np.ndarray:
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) == 2:
        x = rng.standard_normal(shape, dtype=np.float32)
        x *= 1.0 if key == "embed_tokens.weight" else 1 / np.sqrt(shape[1])
        return x
    if key.endswith("norm.weight") or key == "norm.gain":
        return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf == "w":
        return rng.normal(1.0, 0.8, shape).astype(np.float32)
    if leaf == "v_th":
        return rng.uniform(0.05, 0.4, shape).astype(np.float32)
    if leaf == "b_beta":
        return rng.normal(1.5, 0.5, shape).astype(np.float32)
    if leaf == "b_alpha":
        return rng.normal(0.0, 0.5, shape).astype(np.float32)
    if leaf == "b_th":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def write_checkpoint(dst: Path, sizes: dict, seed: int = 0) -> tuple[int, int]:
    """Stream a random HF-layout NeuronSpark checkpoint to dst; returns (parameters, bytes)."""
    from ns_compile.models.neuronspark.config import NSConfig
    from ns_compile.models.neuronspark.shapes import HF_PREFIX, shape_table

    cfg_d = {"model_type": "neuronspark", **sizes, "v_th_min": 0.1}
    table = shape_table(NSConfig.from_dict(cfg_d, "config"))
    header, off = {}, 0
    for key, shape in table.items():
        n = int(np.prod(shape)) * 4
        header[HF_PREFIX + key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg_d))
    rng = np.random.default_rng(seed)
    with open(dst / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for key, shape in table.items():
            f.write(_init(key, tuple(shape), rng).tobytes())
    params = sum(int(np.prod(s)) for s in table.values())
    return params, (dst / "model.safetensors").stat().st_size


def _rss_kb(pid: int, field: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_measured(cmd: list[str]) -> dict:
    """Run cmd; wall time, peak RSS (sampled VmRSS and the kernel's VmHWM just before exit)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            r = _rss_kb(p.pid)
            hwm = _rss_kb(p.pid, "VmHWM")
            for v in (r, hwm):
                if v and v > peak[0]:
                    peak[0], peak[1] = v, time.perf_counter() - t0
            done.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out = p.stdout.read()
    rc = p.wait()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    import resource
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss        # KiB, max over waited children
    return {"rc": rc, "wall_s": wall, "peak_rss_gb": max(peak[0], maxrss) * 1024 / 1e9,
            "peak_at_s": peak[1], "output": out}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=list(SIZES), default="0.9b")
    ap.add_argument("--calibration-tokens", type=int, default=16)
    ap.add_argument("--keep", default=None, help="write the checkpoint and artifact here instead of a temp folder")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `compile` options")
    a = ap.parse_args(argv)

    import torch
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {mem:.1f} GB RAM, "
          f"load average {load[0]:.1f}/{load[1]:.1f}; Python {platform.python_version()}, torch {torch.__version__}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="ns-bench-compile-", dir=a.keep) as tmp:
        tmp = Path(tmp)
        ck = tmp / f"neuronspark-{a.size}-random"
        t0 = time.perf_counter()
        params, nbytes = write_checkpoint(ck, SIZES[a.size])
        t_write = time.perf_counter() - t0
        print(f"checkpoint: {a.size} config {SIZES[a.size]}, {params:,} parameters, model.safetensors "
              f"{nbytes / 1e9:.2f} GB fp32, written in {t_write:.1f} s", flush=True)
        rng = np.random.default_rng(0)
        ids = rng.integers(5, SIZES[a.size]["vocab_size"], a.calibration_tokens).tolist()
        (tmp / "calib.json").write_text(json.dumps(ids))
        art = tmp / "model.nsa"
        cmd = [sys.executable, "-m", "ns_compile", "compile", str(ck), "-o", str(art),
               "--calibration", str(tmp / "calib.json"), *a.extra]
        print("command: " + " ".join(["python -m ns_compile compile CKPT -o ART --calibration ids.json", *a.extra]),
              flush=True)
        r = run_measured(cmd)
        if r["rc"] != 0:
            print(r["output"][-4000:])
            print(f"compile FAILED with exit code {r['rc']} after {r['wall_s']:.1f} s, peak RSS "
                  f"{r['peak_rss_gb']:.2f} GB")
            return 1
        last = [ln for ln in r["output"].splitlines() if ln.startswith("wrote ")]
        asize = art.stat().st_size
        print(last[-1] if last else "")
        print(f"compile wall time   {r['wall_s']:.1f} s  ({a.calibration_tokens} calibration tokens)")
        print(f"peak RSS            {r['peak_rss_gb']:.2f} GB (reached at {r['peak_at_s']:.0f} s)")
        print(f"peak RSS / checkpoint bytes      {r['peak_rss_gb'] * 1e9 / nbytes:.2f}x")
        print(f"artifact / checkpoint bytes      {asize / nbytes:.2f}x  (artifact {asize / 1e9:.2f} GB)")
        print(f"compile time / checkpoint write  {r['wall_s'] / t_write:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
