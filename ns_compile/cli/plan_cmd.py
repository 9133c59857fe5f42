"""`ns-compile plan`: tile and place a model on a Loihi 2 system from shapes alone."""
from __future__ import annotations

import json

import click


def shape_graph(checkpoint):
    """Checkpoint or config-only directory → shape-only IR graph (no weight data is read)."""
    from ns_compile.errors import UserError
    from ns_compile.models import load_model

    if _is_artifact(checkpoint):              # a compiled artifact: its graph carries measured activity
        from ns_compile.artifact import load_artifact
        return load_artifact(checkpoint)[0]
    handle = load_model(checkpoint, weights=False)
    try:
        from ns_compile.lower import lower_handle
    except ImportError:
        raise UserError("the IR lowering (ns_compile.lower) is not available", checkpoint) from None
    return lower_handle(handle, weights=False)


def _is_artifact(path) -> bool:
    import zipfile
    from pathlib import Path
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return "manifest.json" in z.namelist() and "graph.json" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


@click.command("plan")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--hardware", "hardware", required=True,
              help="Hardware profile: a built-in name (loihi2-chip, oheo-gulch, kapoho-point, hala-point) "
                   "or a JSON profile file.")
@click.option("--weight-bits", "weight_bits", type=click.IntRange(1, 8), default=None,
              help="Plan every synapse group at this weight precision (default: the quantized graph's bits, "
                   "else 8).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write plan.json, report.txt, per-core utilization CSVs and PNG plots (core-utilization "
                   "heatmap, chip-to-chip traffic) to this directory.")
@click.option("--seed", type=int, default=1, show_default=True, help="METIS seed.")
def command(checkpoint, hardware, weight_bits, as_json, report_dir, seed):
    """Plan CHECKPOINT on a Loihi 2 system: tiles, cores, chips, traffic, latency and energy.

    CHECKPOINT is anything `inspect` accepts; a directory holding only config.json is enough
    (weights are never read). A compiled artifact is accepted too: its graph carries the spike rates
    measured during calibration (Nord), which then drive the event-driven traffic and energy
    instead of the stated default activity. Every population and synapse group is split into core-sized tiles
    that satisfy every per-core budget of the profile at the planned weight precision, tiles are
    placed on chips with METIS and packed into cores, and the result is compared with a naive
    sequential fill. Exit code 2 with the failing budget, where and by how much when the model
    does not fit.
    """
    from ns_compile.partition import partition_graph, load_profile

    profile = load_profile(hardware)           # validate the profile before loading the model
    graph = shape_graph(checkpoint)
    res = partition_graph(graph, profile, activity=graph.meta.get("activity"), weight_bits=weight_bits, seed=seed)
    if report_dir:
        res.write_report(report_dir)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=1))
    else:
        click.echo(res.render())
        if report_dir:
            click.echo(f"report written to {report_dir}")
