"""`ns-compile run`: generate from a compiled artifact on the emulator, Lava's simulator or Loihi 2."""
from __future__ import annotations

import json
import sys

import click

from ns_compile.errors import UserError


def run_emulator(artifact_path, prompt_ids, *, mode: str = "fixed", max_new_tokens=32, temperature=0.0, top_k=0,
                 seed=None, eos_token_id=None, device="cpu"):
    """New token ids from the artifact on the integer emulator (mode fixed) or the float IR (mode float)."""
    from ns_compile.artifact import Artifact
    from ns_compile.sim import Emulator
    a = Artifact(artifact_path)
    g = a.float_graph() if mode == "float" else a.graph()
    vocab = int(g.config.get("vocab_size", 0))
    bad = [t for t in prompt_ids if not 0 <= t < vocab]
    if bad:
        raise UserError(f"token id {bad[0]} is outside the vocabulary [0, {vocab})")
    emu = Emulator(g, device=device)
    return emu.generate(prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        seed=seed, eos_token_id=eos_token_id)


@click.command("run")
@click.argument("artifact", type=click.Path(exists=False))
@click.option("--backend", type=click.Choice(["emulator", "lava-sim", "loihi2"]), default="emulator",
              show_default=True, help="emulator: the integer golden model (sim/); lava-sim: Lava's CPU simulator; "
                                      "loihi2: Loihi 2 hardware (INRC).")
@click.option("--float", "mode", flag_value="float", help="Float semantics (the float IR / Lava floating_pt).")
@click.option("--fixed", "mode", flag_value="fixed", default=True, help="Integer semantics (default).")
@click.option("--prompt", help="Prompt text (tokenized with the tokenizer stored in the artifact).")
@click.option("--chat", is_flag=True, help="With --prompt: use the tokenizer's chat template.")
@click.option("--prompt-ids", "prompt_ids", type=click.Path(dir_okay=False),
              help="JSON file with the prompt as token ids: [3, 87, ...] or [[3, 87, ...]].")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(min=0))
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 (or below): greedy.")
@click.option("--top-k", "top_k", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", type=int, default=None, help="Sampler seed (default 0 on the emulator).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Emulator device.")
@click.option("--json", "as_json", is_flag=True, help='Print {"ids": [new ids], "text": ...} as one JSON object.')
def command(artifact, backend, mode, prompt, chat, prompt_ids, max_new_tokens, temperature, top_k, seed, device,
            as_json):
    """Generate tokens from a compiled ARTIFACT (same output contract as `generate`)."""
    from ns_compile.artifact import Artifact
    from ns_compile.cli.model_io import read_prompt_ids

    if (prompt is None) == (prompt_ids is None):
        raise UserError("give exactly one of --prompt TEXT or --prompt-ids FILE")
    if chat and prompt is None:
        raise UserError("--chat applies to --prompt TEXT, not to --prompt-ids")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but CUDA is not available on this machine")
    a = Artifact(artifact)
    vocab = a.manifest.get("source", {}).get("config", {}).get("vocab_size")
    tok = a.tokenizer()
    if prompt_ids is not None:
        ids = read_prompt_ids(prompt_ids, vocab)
    else:
        if tok is None:
            raise UserError("the artifact holds no tokenizer; use --prompt-ids", artifact)
        if chat:
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        else:
            ids = tok.encode(tok.special_tokens.get("bos_token", "") + prompt)
    eos = tok.eos_token_id if tok is not None else None
    if backend == "emulator":
        new = run_emulator(artifact, ids, mode=mode, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_k=top_k, seed=seed, eos_token_id=eos, device=device)
    else:
        try:
            from ns_compile.backends.lava import run_artifact
        except ImportError as e:
            raise UserError(f"backend {backend} is not available: ns_compile.backends.lava.run_artifact cannot be "
                            f"imported ({e})") from None
        import inspect
        graph = a.float_graph() if mode == "float" else a.graph()
        kw = dict(backend=backend, mode=mode, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                  seed=0 if seed is None else seed)
        if "eos_token_id" in inspect.signature(run_artifact).parameters:
            kw["eos_token_id"] = eos
        new = run_artifact(graph, ids, **kw)
        if isinstance(new, dict):
            new = new["ids"]
        new = [int(t) for t in new]
        if eos is not None and eos in new:          # the emulator's contract: stop at (and keep) EOS
            new = new[: new.index(eos) + 1]
    text = tok.decode(new) if tok is not None else None
    if as_json:
        click.echo(json.dumps({"ids": new, "text": text}, ensure_ascii=False))
    else:
        click.echo(text if text is not None else " ".join(map(str, new)))
    sys.stdout.flush()
