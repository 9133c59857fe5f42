"""`ns-compile trace`: record one stage's per-frame trace into a portable file."""
from __future__ import annotations

import click


@click.command("trace")
@click.argument("source", metavar="CHECKPOINT_OR_ARTIFACT", type=click.Path(exists=False))
@click.option("--stage", required=True,
              type=click.Choice(["reference", "reference-bf16", "emulator", "lava-sim-float", "lava-sim-fixed",
                                 "loihi2"]),
              help="What to run: the reference needs a checkpoint (or an artifact that records one), the other "
                   "stages an artifact.")
@click.option("--input-ids", "input_ids", type=click.Path(dir_okay=False),
              help="JSON file: a list of equal-length lists of token ids.")
@click.option("--text", "text", type=click.Path(dir_okay=False),
              help="UTF-8 text file, tokenized with the model's tokenizer (one row).")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True,
              help="With --text: use at most this many tokens.")
@click.option("--max-new-tokens", type=click.IntRange(0), default=0, show_default=True,
              help="Also record a greedy generation of this many tokens from row 0.")
@click.option("--populations", default=None,
              help="Comma-separated glob patterns of the populations to keep (default: all).")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output trace (.safetensors), written atomically.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the reference runs.")
def command(source, stage, input_ids, text, max_tokens, max_new_tokens, populations, out, device):
    """Run one STAGE on the input and write its trace: per population, token and frame the membrane
    state (float units, plus raw integers for integer stages), spikes, outputs, saturation counts,
    the logits and the metadata needed to compare it elsewhere (`ns-compile compare
    --reference-trace`). Needs no Lava for the reference stages."""
    from pathlib import Path

    from ns_compile.errors import UserError
    from ns_compile.verify.stages import (REFERENCE_STAGES, looks_like_checkpoint, manifest_checkpoint,
                                          open_artifact, open_checkpoint, read_ids_file, read_text_ids, run_stage)

    if bool(input_ids) == bool(text):
        raise UserError("give exactly one of --input-ids IDS.json or --text FILE")
    p = Path(source)
    if not p.exists():
        raise UserError("no such file or directory", p)
    if looks_like_checkpoint(p):
        src = open_checkpoint(p)
    else:
        src = open_artifact(p)
        if stage in REFERENCE_STAGES:
            ck = manifest_checkpoint(src)
            if ck is None:
                raise UserError(f"stage {stage} needs the checkpoint; the artifact records none that exists here", p)
            src = open_checkpoint(ck)
    handle = src.handle
    if input_ids:
        vocab = (getattr(handle.config, "vocab_size", None) if handle is not None
                 else src.graph.config.get("vocab_size"))
        ids = read_ids_file(input_ids, vocab)
        how = f"input ids ({Path(input_ids).name})"
    else:
        if handle is None and (ck := manifest_checkpoint(src)) is not None:
            from ns_compile.models import load_model
            handle = load_model(ck, weights=False)
        ids = read_text_ids(handle, text, max_tokens)
        how = f"text ({Path(text).name}, {len(ids[0])} tokens)"
    pops = [x.strip() for x in populations.split(",") if x.strip()] if populations else None
    trace = run_stage(stage, src, ids, device=device, populations=pops, max_new_tokens=max_new_tokens,
                      input_source=how)
    trace.save(out)
    n = sum(a.nbytes for e in trace.entries.values() for a in e.arrays.values())
    click.echo(f"wrote {out}: stage {stage}, {len(trace.entries)} populations, {len(ids)}x{len(ids[0])} tokens, "
               f"{n / 2**20:.1f} MiB of arrays", err=True)
