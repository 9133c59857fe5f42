"""`ns-compile compare` as a library: collect the traces of the requested stages, compare every
pair, check the user's tolerances. The CLI (ns_compile/cli/compare_cmd.py) only parses flags."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ns_compile.errors import UserError
from ns_compile.verify.metrics import DEFAULT_ATOL, DEFAULT_RTOL, compare_traces, pairs_for
from ns_compile.verify.stages import (REFERENCE_STAGES, Source, manifest_checkpoint, open_artifact, open_checkpoint,
                                      read_ids_file, read_text_ids, run_stage)
from ns_compile.verify.trace import Trace


@dataclass
class Comparison:
    traces: list[Trace]
    results: list[dict]
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def trace(self, stage: str) -> Trace | None:
        return next((t for t in self.traces if t.stage == stage), None)


def _vocab(src: Source | None) -> int | None:
    if src is None:
        return None
    if src.handle is not None:
        return getattr(src.handle.config, "vocab_size", None)
    if src.graph is not None:
        return src.graph.config.get("vocab_size")
    return None


def collect(artifact: str | None, *, reference: str | None = None, reference_trace: str | None = None,
            stages: list[str], input_ids: str | None = None, text: str | None = None, device: str = "cpu",
            populations: list[str] | None = None, max_new_tokens: int = 0, max_tokens: int | None = 256,
            rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, log=None) -> Comparison:
    """Run (or load) every stage and compare the pairs (baseline vs each, then adjacent stages)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if reference and reference_trace:
        raise UserError("give either --reference or --reference-trace, not both")
    if input_ids and text:
        raise UserError("give either --input-ids or --text, not both")
    warnings: list[str] = []
    art = open_artifact(artifact) if artifact else None
    ref_trace = Trace.load(reference_trace) if reference_trace else None
    ref_src = None
    if ref_trace is None:
        if reference:
            ref_src = open_checkpoint(reference)
        elif art is not None and (p := manifest_checkpoint(art)) is not None:
            log(f"reference: the checkpoint recorded in the artifact manifest, {p}")
            ref_src = open_checkpoint(p)
    needs_ref = [s for s in stages if s in REFERENCE_STAGES]
    if needs_ref and ref_src is None:
        raise UserError(f"stage {needs_ref[0]} needs a checkpoint: pass --reference CHECKPOINT")
    # inputs
    if input_ids:
        ids = read_ids_file(input_ids, _vocab(ref_src) or _vocab(art))
        source = f"input ids ({Path(input_ids).name})"
    elif text:
        handle = ref_src.handle if ref_src is not None else None
        if handle is None and art is not None and (p := manifest_checkpoint(art)) is not None:
            from ns_compile.models import load_model
            handle = load_model(p, weights=False)
        ids = read_text_ids(handle, text, max_tokens)
        source = f"text ({Path(text).name}, {len(ids[0])} tokens)"
    elif ref_trace is not None and ref_trace.input_ids is not None:
        ids = ref_trace.input_ids.tolist()
        source = ref_trace.meta.get("input_source", "input ids of the reference trace")
    else:
        raise UserError("give the input: --input-ids IDS.json or --text FILE")
    if ref_trace is not None:
        if ref_trace.input_ids is None or not np.array_equal(ref_trace.input_ids, np.asarray(ids)):
            raise UserError("the reference trace was recorded for different input ids than the ones given "
                            "(record it with the same --input-ids / --text)", reference_trace)
        if art is not None:
            man = art.manifest or {}
            want = (man.get("source") or {}).get("sha256") if isinstance(man.get("source"), dict) else None
            want = want or man.get("checkpoint_sha256")
            have = ref_trace.meta.get("checksum")
            if want and have and want.split(":")[-1] != have.split(":")[-1]:
                warnings.append(f"the reference trace's checkpoint checksum {have} differs from the one the "
                                f"artifact was compiled from ({want})")
    traces: list[Trace] = []
    if ref_trace is not None:
        if ref_trace.stage != "reference" and ref_trace.stage in stages:
            # e.g. a golden emulator trace against this artifact's emulator: keep both names apart
            ref_trace.meta["stage"] = f"{ref_trace.stage} (trace)"
        traces.append(ref_trace)
    elif ref_src is not None:
        log("running reference ...")
        traces.append(run_stage("reference", ref_src, ids, device=device, populations=populations,
                                max_new_tokens=max_new_tokens, input_source=source))
    for s in stages:
        if s == "reference" and traces and traces[0].stage == "reference":
            continue
        log(f"running {s} ...")
        src = ref_src if s in REFERENCE_STAGES else art
        if src is None:
            raise UserError(f"stage {s} needs an artifact")
        traces.append(run_stage(s, src, ids, device=device, populations=populations,
                                max_new_tokens=max_new_tokens, input_source=source))
    if max_new_tokens and ref_trace is not None and not ref_trace.meta.get("greedy"):
        warnings.append("the reference trace holds no greedy generation (record it with --max-new-tokens)")
    names = [t.stage for t in traces]
    if len(set(names)) != len(names):
        raise UserError(f"a stage appears twice: {', '.join(names)}")
    by = {t.stage: t for t in traces}
    results = [compare_traces(by[a], by[b], rtol=rtol, atol=atol) for a, b in pairs_for(names)]
    if not results:
        raise UserError("nothing to compare: give at least two stages (a reference and --stages ...)")
    meta = {"artifact": artifact or "-", "reference": reference or reference_trace or "-", "input": source,
            "stages": ", ".join(names)}
    for w in warnings:
        log(f"warning: {w}")
    return Comparison(traces, results, meta, warnings)


def check_tolerances(results: list[dict], *, max_kl: float | None = None, max_top1_drop: float | None = None,
                     require_bit_exact: bool = False) -> list[str]:
    """The list of violated tolerances (empty when all hold)."""
    fails = []
    for r in results:
        name = f"{r['a']} vs {r['b']}"
        if max_kl is not None and r.get("kl") is not None and r["kl"] > max_kl:
            fails.append(f"{name}: KL {r['kl']:.4g} > --max-kl {max_kl:g}")
        if max_top1_drop is not None and r.get("top1_agreement") is not None:
            drop = 1.0 - r["top1_agreement"]
            if drop > max_top1_drop:
                fails.append(f"{name}: top-1 disagreement {drop:.4g} > --max-top1-drop {max_top1_drop:g}")
    if require_bit_exact:
        ints = [r for r in results if r.get("integer")]
        if not ints:
            raise UserError("--require-bit-exact needs two integer stages (e.g. --stages emulator,lava-sim-fixed)")
        for r in ints:
            if not r["bit_exact"]:
                d = r.get("first_divergence")
                where = f" (first divergence: {d['layer']} token {d['token']} frame {d['frame']})" if d else ""
                fails.append(f"{r['a']} vs {r['b']}: not bit-exact{where}")
    return fails
