"""Quantization error against weight bits, for the report.

Either read from the artifact's calibration report (manifest "calibration" → "bits_sweep": a
list of {"bits", "kl", "top1_disagreement", "rel_rms_median"}), or computed here: compile the
reference checkpoint in-process at each bit width, run the emulator and compare to the reference.
"""
from __future__ import annotations

import numpy as np

from ns_compile.errors import UserError


def _from_manifest(cmp_, artifact_src) -> list[dict] | None:
    man = (artifact_src.manifest or {}) if artifact_src is not None else {}
    cal = man.get("calibration") or {}
    sweep = cal.get("bits_sweep") if isinstance(cal, dict) else None
    if isinstance(sweep, list) and sweep and all(isinstance(x, dict) and "bits" in x for x in sweep):
        return sweep
    return None


def bits_sweep_for(cmp_, artifact, reference, bits_text: str | None, *, log) -> list[dict] | None:
    from ns_compile.verify.stages import open_artifact
    art = open_artifact(artifact) if artifact else None
    if not bits_text:
        return _from_manifest(cmp_, art)
    try:
        bits = [int(b) for b in bits_text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--bits-sweep takes integers like 8,6,4, got {bits_text!r}") from None
    if not bits or any(not 2 <= b <= 8 for b in bits):
        raise UserError("--bits-sweep: weight bits must be within [2, 8]")
    ref = cmp_.trace("reference")
    if ref is None:
        raise UserError("--bits-sweep needs the reference stage (--reference CHECKPOINT or --reference-trace)")
    return compute_bits_sweep(ref, reference or ref.meta.get("checkpoint"), bits, log=log)


def compute_bits_sweep(ref, checkpoint, bits: list[int], *, log) -> list[dict]:
    """Compile `checkpoint` at each weight width (ns-compile compile, into a temporary folder), run
    the emulator on the reference trace's ids and compare to it."""
    import tempfile
    from pathlib import Path

    from ns_compile.artifact import load_artifact
    from ns_compile.cli.compile_cmd import compile_checkpoint
    from ns_compile.verify.metrics import compare_traces
    from ns_compile.verify.stages import Source, run_stage

    if not checkpoint or not Path(str(checkpoint)).exists():
        raise UserError("--bits-sweep needs the reference checkpoint (--reference CHECKPOINT)")
    out = []
    ids = ref.input_ids.tolist()
    keys = list(ref.entries)
    with tempfile.TemporaryDirectory(prefix="ns-bits-") as tmp:
        for b in bits:
            log(f"bits sweep: compiling at {b} weight bits ...")
            art = Path(tmp) / f"w{b}.nsc"
            compile_checkpoint(checkpoint, art, weight_bits=b)
            graph, manifest = load_artifact(art)
            src = Source(art, graph=graph, manifest=dict(manifest or {}))
            t = run_stage("emulator", src, ids, populations=keys or None)
            r = compare_traces(ref, t)
            rel = [x["rel_rms_err"] for x in r["layers"]
                   if x.get("rel_rms_err") is not None and np.isfinite(x["rel_rms_err"])]
            out.append({"bits": b, "kl": r.get("kl"),
                        "top1_disagreement": None if r.get("top1_agreement") is None else 1.0 - r["top1_agreement"],
                        "rel_rms_median": float(np.median(rel)) if rel else None})
    return out
