"""`ns-compile inspect`: what a checkpoint is, from shapes alone."""
from __future__ import annotations

import json

import click


@click.command("inspect")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (architecture, parameters, neurons, synapses, state, ops) "
                   "instead of tables.")
def command(checkpoint, as_json):
    """Describe CHECKPOINT without running it.

    CHECKPOINT is a Hugging Face directory (config.json, optionally model.safetensors and the
    tokenizer files), a NeuronSpark training .pth or a Nord .pt. A directory holding only
    config.json is enough: everything is derived from shapes, and weight data is never read.

    Prints the architecture, parameters per component and in total, neurons and synapses per
    layer, the membrane state carried from token to token, and which operations map onto
    neuromorphic cores (neuron populations, synapse groups) versus the host (embedding, norms,
    PonderNet, LM head, sampling).
    """
    from ns_compile.models import load_model

    handle = load_model(checkpoint, weights=False)
    info = handle.inspect()
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        click.echo(handle.format_inspect(info))
