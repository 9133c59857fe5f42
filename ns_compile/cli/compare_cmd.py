"""`ns-compile compare`: run several stages on the same input and compare them pair by pair."""
from __future__ import annotations

import click


@click.command("compare")
@click.argument("artifact", required=False, type=click.Path(exists=False))
@click.option("--reference", "reference", type=click.Path(exists=False),
              help="Checkpoint for the fp32 reference stage (default: the checkpoint recorded in the artifact, "
                   "when it exists).")
@click.option("--reference-trace", "reference_trace", type=click.Path(exists=False),
              help="A trace recorded with `ns-compile trace CKPT --stage reference` (e.g. on a GPU machine), "
                   "used as the baseline instead of running the reference here.")
@click.option("--stages", default="emulator", show_default=True,
              help="Comma-separated stages to run on the artifact: emulator, lava-sim-float, lava-sim-fixed, loihi2 "
                   "(reference-bf16 runs the checkpoint). The reference is always the baseline when present.")
@click.option("--input-ids", "input_ids", type=click.Path(dir_okay=False),
              help="JSON file: a list of equal-length lists of token ids.")
@click.option("--text", "text", type=click.Path(dir_okay=False),
              help="UTF-8 text file, tokenized with the model's tokenizer (one row; perplexity is reported).")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True,
              help="With --text: use at most this many tokens.")
@click.option("--max-new-tokens", type=click.IntRange(0), default=0, show_default=True,
              help="Also generate greedily this many tokens from row 0 in every stage and compare the tokens.")
@click.option("--populations", default=None,
              help="Comma-separated glob patterns of the populations to trace (default: all), e.g. 'layers.0.*'.")
@click.option("--population", "population", default=None,
              help="Population shown in the report's membrane/raster plots (default: the first divergent one).")
@click.option("--report", "report", type=click.Path(file_okay=False),
              help="Write a self-contained HTML report (index.html + PNGs) into this folder.")
@click.option("--bits-sweep", "bits_sweep", default=None,
              help="With --report and a reference checkpoint: compile at these weight bits in-process (e.g. 8,6,4) "
                   "and plot the error against bits (default: the artifact's calibration report, when present).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object instead of tables.")
@click.option("--max-top1-drop", type=click.FloatRange(0, 1), default=None,
              help="Fail (exit 1) when a pair's top-1 disagreement (1 − agreement) exceeds this fraction.")
@click.option("--max-kl", type=click.FloatRange(0), default=None,
              help="Fail (exit 1) when a pair's mean logits KL divergence (nats) exceeds this.")
@click.option("--require-bit-exact", is_flag=True,
              help="Fail (exit 1) unless every pair of integer stages is bit-exact.")
@click.option("--rtol", type=click.FloatRange(0), default=1e-3, show_default=True,
              help="Float divergence rule: a frame diverges when |Δ| > atol + rtol·max|baseline| of the population.")
@click.option("--atol", type=click.FloatRange(0), default=0.0, show_default=True, help="See --rtol.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the reference runs.")
def command(artifact, reference, reference_trace, stages, input_ids, text, max_tokens, max_new_tokens, populations,
            population, report, bits_sweep, as_json, max_top1_drop, max_kl, require_bit_exact, rtol, atol, device):
    """Compare the stages of ARTIFACT (and its reference) on the same tokens. Without ARTIFACT only
    checkpoint stages run (e.g. --reference CKPT --stages reference-bf16).

    Prints, per pair of stages, the logits KL divergence and top-1 agreement, whether the integer
    states are bit-exact, the first divergent layer and frame, and a table of populations, worst
    first. Exit status: 0 ok, 1 a given tolerance exceeded, 2 bad input. See docs/compare.md.
    """
    from ns_compile.errors import ToleranceExceeded
    from ns_compile.verify.compare import check_tolerances, collect
    from ns_compile.verify.report import format_table, sanitize, to_json, write_html
    from ns_compile.verify.stages import parse_stages

    stage_list = parse_stages(stages)
    pops = [p.strip() for p in populations.split(",") if p.strip()] if populations else None
    log = (lambda m: click.echo(m, err=True))
    cmp = collect(artifact, reference=reference, reference_trace=reference_trace, stages=stage_list,
                  input_ids=input_ids, text=text, device=device, populations=pops, max_new_tokens=max_new_tokens,
                  max_tokens=max_tokens, rtol=rtol, atol=atol, log=log)
    fails = check_tolerances(cmp.results, max_kl=max_kl, max_top1_drop=max_top1_drop,
                             require_bit_exact=require_bit_exact)
    sweep = None
    if report:
        from ns_compile.verify.sweep import bits_sweep_for
        sweep = bits_sweep_for(cmp, artifact, reference, bits_sweep, log=log)
        tol_given = max_kl is not None or max_top1_drop is not None or require_bit_exact
        path = write_html(report, cmp.results, cmp.traces, population=population, bits_sweep=sweep, meta=cmp.meta,
                          tolerance_failures=fails if tol_given else None)
        log(f"wrote {path}")
    if as_json:
        extra = {"meta": cmp.meta, "warnings": cmp.warnings, "tolerance_failures": fails}
        if sweep:
            extra["bits_sweep"] = sweep
        click.echo(to_json(sanitize(cmp.results), extra))
    else:
        click.echo(format_table(cmp.results))
    if fails:
        raise ToleranceExceeded("; ".join(fails))
