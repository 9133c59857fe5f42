"""`ns-compile logits`: reference logits of a checkpoint for given token ids."""
from __future__ import annotations

import click

from ns_compile.cli.model_io import device_option, dtype_option, read_id_batch, torch_dtype


@click.command("logits")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--input-ids", "input_ids", required=True, type=click.Path(dir_okay=False),
              help="JSON file: a list of equal-length lists of token ids, e.g. [[3, 87], [3, 100]].")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output .npy file: float32 [batch, length, vocab], written atomically.")
@device_option
@dtype_option
def command(checkpoint, input_ids, out, device, dtype):
    """Compute the exact reference logits of CHECKPOINT for the ids in --input-ids.

    Every row starts from zeroed membrane state and runs all frames of every token (no
    padding, no attention mask). The result is written to --out only when everything
    succeeded; on any error nothing is written.
    """
    import numpy as np

    from ns_compile.atomic import atomic_path
    from ns_compile.models import load_model

    handle = load_model(checkpoint, weights=True)
    vocab = getattr(handle.config, "vocab_size", None)
    rows = read_id_batch(input_ids, vocab)
    import torch

    logits = handle.logits(torch.tensor(rows, dtype=torch.long), device=device, dtype=torch_dtype(dtype))
    arr = logits.detach().float().cpu().numpy().astype(np.float32, copy=False)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    click.echo(f"wrote {out}: float32 {list(arr.shape)}", err=True)
