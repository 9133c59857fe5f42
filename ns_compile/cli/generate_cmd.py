"""`ns-compile generate`: sample a continuation with the exact reference model."""
from __future__ import annotations

import json
import sys

import click

from ns_compile.cli.model_io import device_option, dtype_option, read_prompt_ids, torch_dtype
from ns_compile.errors import UserError


@click.command("generate")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--prompt", help="Prompt text (needs the checkpoint's tokenizer). NeuronSpark encodes plain "
                               "text in its pretraining format (<|im_start|> + text).")
@click.option("--chat", is_flag=True, help="With --prompt: wrap it as a user message in the tokenizer's chat "
                                           "template (ChatML) and add the assistant generation prompt.")
@click.option("--system", "system", help="With --chat: a system message placed before the user message.")
@click.option("--prompt-ids", "prompt_ids", type=click.Path(dir_okay=False),
              help="JSON file with the prompt as token ids: [3, 87, ...] or [[3, 87, ...]].")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(min=0),
              help="Most tokens to generate (fewer when the end-of-sequence token comes first).")
@click.option("--temperature", default=0.0, show_default=True, type=float,
              help="Sampling temperature; 0 (or below) is greedy argmax.")
@click.option("--top-k", "top_k", default=0, show_default=True, type=click.IntRange(min=0),
              help="Sample only among the k most likely tokens (ties at the cut-off kept); 0 = all.")
@click.option("--seed", type=int, default=None, help="Seed of the sampler's torch.Generator (reproducible "
                                                     "sampling); random when omitted.")
@click.option("--ignore-eos", is_flag=True, help="Do not stop at the tokenizer's end-of-sequence token.")
@device_option
@dtype_option
@click.option("--json", "as_json", is_flag=True, help='Print {"ids": [new ids], "text": decoded text or null} '
                                                      '(plus "stats" with --stats) as one JSON object.')
@click.option("--stats", is_flag=True, help="Report generation statistics (timings, seed, carried state; Nord: "
                                            "its own spike statistics). Printed to stderr, or under \"stats\" "
                                            "with --json.")
@click.option("--stdp", is_flag=True, help="Nord v3 only: reward-modulated STDP on every block's W_v during "
                                           "generation, as upstream's chat does (inert on v4, warned). "
                                           "NeuronSpark rejects it.")
def command(checkpoint, prompt, chat, system, prompt_ids, max_new_tokens, temperature, top_k, seed, ignore_eos,
            device, dtype, as_json, stats, stdp):
    """Generate tokens from CHECKPOINT after a prompt (--prompt TEXT or --prompt-ids FILE).

    The prompt is run once; then each new token advances the carried state by one token
    (NeuronSpark: membrane potentials; Nord: a per-layer cache of key spikes and values). Nord
    re-runs the prefix only where the cache is not exact: with --stdp, or once the window slides
    past max_seq_len. Prints the new text (or ids when the checkpoint has no tokenizer); --json
    prints ids and text.
    """
    from ns_compile.models import GenerationConfig, load_model

    if (prompt is None) == (prompt_ids is None):
        raise UserError("give exactly one of --prompt TEXT or --prompt-ids FILE")
    if chat and prompt is None:
        raise UserError("--chat applies to --prompt TEXT, not to --prompt-ids")
    if system is not None and not chat:
        raise UserError("--system needs --chat")

    handle = load_model(checkpoint, weights=True)
    vocab = getattr(handle.config, "vocab_size", None)
    if prompt_ids is not None:
        ids = read_prompt_ids(prompt_ids, vocab)
    else:
        ids = handle.encode_prompt(prompt, chat=chat, system=system)
    eos = None
    if not ignore_eos and handle.tokenizer is not None:
        eos = handle.tokenizer.eos_token_id
    gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                           eos_token_id=eos, extra={"stats": stats, "stdp": stdp})
    new = handle.generate(ids, gen, device=device, dtype=torch_dtype(dtype))
    text = handle.decode(new)
    st = handle.last_stats if stats else None
    if as_json:
        out = {"ids": new, "text": text}
        if st is not None:
            out["stats"] = st
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        click.echo(text if text is not None else " ".join(map(str, new)))
        if st is not None:
            for k, v in st.items():
                click.echo(f"{k}: {v}", err=True)
    sys.stdout.flush()
