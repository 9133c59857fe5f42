"""`ns-compile compile`: checkpoint → lowered, calibrated, quantized (and optionally partitioned) artifact."""
from __future__ import annotations

import os

import hashlib
from pathlib import Path

import click

from ns_compile.errors import UserError

MAX_CALIBRATION_TOKENS = 512


def calibration_ids(handle, calibration: str | None):
    """Token ids [1, T] for calibration: the --calibration text file tokenized with the checkpoint's
    tokenizer, else the built-in English/Chinese text, else (no tokenizer) fixed pseudo-random ids."""
    import torch

    from ns_compile.quant.calibrate import DEFAULT_TEXT
    if calibration is not None and str(calibration).endswith(".json"):
        return _calibration_id_file(handle, calibration)
    if calibration is not None:
        p = Path(calibration)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise UserError("no such file", p) from None
        except OSError as e:
            raise UserError(f"cannot read: {e.strerror}", p) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("the calibration file is not UTF-8 text", p) from None
        if not text.strip():
            raise UserError("the calibration file is empty", p)
        if handle.tokenizer is None:
            raise UserError("the checkpoint has no tokenizer, so a calibration text cannot be tokenized", p)
        try:
            ids = handle.encode_prompt(text)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"the calibration text does not tokenize: {e}", p) from None
        if len(ids) < 2:
            raise UserError("the calibration text gives fewer than 2 tokens", p)
        src = {"calibration": p.name, "calibration_sha256": hashlib.sha256(raw).hexdigest()}
    elif handle.tokenizer is not None:
        ids = handle.encode_prompt(DEFAULT_TEXT)
        src = {"calibration": "builtin"}
    else:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, handle.config.vocab_size, (64,), generator=g).tolist()
        src = {"calibration": "random-ids(seed 0, 64)"}
    ids = [int(t) for t in ids][:MAX_CALIBRATION_TOKENS]
    bad = [t for t in ids if not 0 <= t < handle.config.vocab_size]
    if bad:
        raise UserError(f"the calibration text gives token id {bad[0]} outside the model's vocabulary",
                        calibration)
    return torch.tensor([ids]), src


def _calibration_id_file(handle, calibration):
    """--calibration FILE.json: token ids, one list or a list of equal-length lists (for checkpoints
    without a tokenizer, e.g. the Nord fixtures); rows are concatenated."""
    import torch

    from ns_compile.cli.model_io import read_json
    p = Path(calibration)
    data = read_json(p)
    rows = data if isinstance(data, list) and data and all(isinstance(r, list) for r in data) else [data]
    ids = []
    for r in rows:
        if not isinstance(r, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in r):
            raise UserError("a .json calibration file must hold token ids: [3, 87, ...] or [[...], [...]]", p)
        ids += r
    if len(ids) < 2:
        raise UserError("the calibration ids give fewer than 2 tokens", p)
    bad = [t for t in ids if not 0 <= t < handle.config.vocab_size]
    if bad:
        raise UserError(f"calibration token id {bad[0]} is outside the model's vocabulary", p)
    raw = p.read_bytes()
    if len(rows) > 1 and len({len(r) for r in rows}) == 1:       # equal rows stay rows (fresh state each)
        n = max(1, MAX_CALIBRATION_TOKENS // len(rows[0]))
        t = torch.tensor(rows[:n])
    else:
        t = torch.tensor([ids[:MAX_CALIBRATION_TOKENS]])
    return t, {"calibration": p.name,
                                                         "calibration_sha256": hashlib.sha256(raw).hexdigest()}


def _weights_file(handle) -> Path | None:
    src = getattr(handle, "source", None)
    return None if src is None else Path(src.path)


def custom_microcode_types(graph) -> list[tuple[str, str]]:
    from ns_compile.ir import NEURON_TYPES
    kinds = sorted({p.kind for p in graph.populations.values()})
    return [(k, NEURON_TYPES[k].doc) for k in kinds if NEURON_TYPES[k].custom_microcode]


def run_partitioner(graph, hardware: str):
    try:
        import ns_compile.partition as part
    except ImportError:
        part = None
    fn = getattr(part, "partition_graph", None) if part is not None else None
    if fn is None:
        # TODO(partition): helper C provides ns_compile.partition.partition_graph(graph, profile, activity=...)
        raise UserError("partitioner not available (ns_compile.partition.partition_graph is missing); "
                        "compile without --hardware")
    res = fn(graph, hardware, activity=graph.meta.get("activity"))
    for attr in ("to_dict", "as_dict", "to_json"):
        if hasattr(res, attr):
            res = getattr(res, attr)()
            break
    if isinstance(res, str):
        import json
        res = json.loads(res)
    if isinstance(res, dict):        # wall-clock timings would break "same input → same bytes"
        res = {k: v for k, v in res.items() if k not in ("timing", "timing_s")}
    return res


def compile_checkpoint(checkpoint, output, *, weight_bits: int = 8, calibration: str | None = None,
                       hardware: str | None = None, include_float: bool = True, echo=None,
                       per_channel: bool = True):
    """Library entry of `compile`: returns (manifest, report, quantized graph)."""
    from ns_compile.artifact import graph_to_onnx, sha256_file, write_artifact
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.quant import quantize

    if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or not 2 <= weight_bits <= 8:
        raise UserError(f"--weight-bits must be an integer in 2..8, got {weight_bits!r}")
    handle = load_model(checkpoint, weights=True)
    ids, cal_src = calibration_ids(handle, calibration)
    wf = _weights_file(handle)
    fgraph = lower_handle(handle)
    big = fgraph.synapse_count() > 50_000_000
    import torch
    qgraph, report = quantize(fgraph, ids, weight_bits=weight_bits, dtype=torch.float32 if big else torch.float64,
                              per_channel=per_channel)
    partition = run_partitioner(qgraph, hardware) if hardware else None
    options = {"weight_bits": weight_bits, "hardware": hardware, **cal_src}
    if fgraph.family != "nord":                # docs/fixed_point.md §2.1 (NeuronSpark neuron types)
        options["per_channel"] = bool(per_channel)
    # the checkpoint's path relative to the artifact, so `compare ART` finds its reference
    # (relative keeps the bytes independent of where the pair of folders lives)
    rel = os.path.relpath(Path(checkpoint).resolve(), Path(output).resolve().parent)
    source = {"family": handle.family, "name": Path(checkpoint).name, "path": rel,
              "weights_file": wf.name if wf else None, "sha256": sha256_file(wf) if wf else None,
              "config": dict(fgraph.config)}
    tok_dir = Path(handle.tokenizer.path).parent if getattr(handle, "tokenizer", None) is not None else None
    manifest = write_artifact(output, qgraph, float_graph=fgraph if include_float else None, report=report,
                              source=source, options=options, tokenizer_dir=tok_dir, partition=partition,
                              onnx_bytes=graph_to_onnx(qgraph))
    return manifest, report, qgraph


@click.command("compile")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Artifact file to write.")
@click.option("--weight-bits", default=8, show_default=True, type=int,
              help="Bits of the on-chip weight mantissas (2..8).")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="UTF-8 text file for calibration (tokenized with the checkpoint's tokenizer); default: a "
                   "built-in short English/Chinese text.")
@click.option("--hardware", "hardware", help="Hardware profile name or file: also partition the graph "
                                             "(stored as partition.json).")
@click.option("--no-float", "no_float", is_flag=True, help="Do not store the float IR (halves the artifact; "
                                                           "`run --float` then needs the checkpoint).")
@click.option("--per-channel/--no-per-channel", "per_channel", default=True, show_default=True,
              help="Per-output-channel power-of-two weight scales folded into the neurons "
                   "(docs/fixed_point.md §2.1; NeuronSpark).")
def command(checkpoint, output, weight_bits, calibration, hardware, no_float, per_channel):
    """Lower CHECKPOINT to the IR, calibrate and quantize it (docs/fixed_point.md) and write one
    self-contained artifact (-o FILE). Prints the calibration report summary and the neuron types
    that need custom Loihi 2 microcode."""
    from ns_compile.quant import format_report

    if not 2 <= weight_bits <= 8:
        raise UserError(f"--weight-bits must be in 2..8, got {weight_bits}")
    manifest, report, qgraph = compile_checkpoint(checkpoint, output, weight_bits=weight_bits,
                                                  calibration=calibration, hardware=hardware,
                                                  include_float=not no_float, per_channel=per_channel)
    click.echo(format_report(report))
    click.echo("neuron types needing a custom Loihi 2 microcode neuron (docs/fixed_point.md):")
    for kind, sec in custom_microcode_types(qgraph):
        n = sum(p.size for p in qgraph.populations.values() if p.kind == kind)
        click.echo(f"  {kind:<16} {sec:<6} {n:,} neurons")
    click.echo(f"wrote {output} (format v{manifest['format_version']}, fixed-point v{manifest['fixed_point_version']}, "
               f"{qgraph.neuron_count():,} neurons, {qgraph.synapse_count():,} synapses)")
