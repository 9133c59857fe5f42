"""Helpers for the NeuronSpark tests: run the CLI in-process, build modified checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ns_compile.cli import main

NS_0P9B = {"model_type": "neuronspark", "vocab_size": 6144, "D": 896, "N": 8, "K": 16, "num_layers": 20,
           "D_ff": 2688, "v_th_min": 0.1}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run `ns-compile ARGS` through the real entry point; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def copy_checkpoint(src: Path, dst: Path, *, weights: bool = True) -> Path:
    """Copy the fixture checkpoint (config, tokenizer, optionally weights) into dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name == "model.safetensors" and not weights:
            continue
        shutil.copyfile(f, dst / f.name)
        (dst / f.name).chmod(0o644)
    return dst


def load_tensors(ckpt: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(ckpt / "model.safetensors"))


def write_tensors(ckpt: Path, tensors: dict) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(ckpt / "model.safetensors"))


def edit_config(ckpt: Path, **changes) -> None:
    p = ckpt / "config.json"
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg))


def files_in(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()
