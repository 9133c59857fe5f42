#!/usr/bin/env python3
"""Train the two demo models of examples/ from scratch (issue #7).

Three steps, each a sub-command (see examples/README.md for the exact commands and timings):

  prepare  (CPU, needs apt-get or --deb)  corpus -> tokenizer -> token ids
           Extracts the reStructuredText sources of the Python 3.11 documentation from Debian's
           `python3.11-doc` package, turns them into plain text, holds a fixed set of documents
           out (examples/data/heldout.txt), trains a byte-level BPE (vocab 4096) on the rest
           (examples/.build/tokenizer/, copied next to each checkpoint by `finish`), and writes the
           training ids (examples/.build/*.npy, not committed) and the unigram baseline
           (examples/data/unigram.json).
  train    (GPU)  trains both models in parallel (two processes, one GPU) for a wall-clock
           budget each, then writes the checkpoints in their on-disk formats:
             NeuronSpark: Hugging Face directory (config.json + model.safetensors, keys "model.*"),
                          trained with our Triton PLIF scans (forward + surrogate backward) through
                          the exact reference forward (`reference.forward_tokens`);
             Nord v3:     nord_final.pt = {"model_state_dict", "config"}, trained with the
                          reference modules and the sigmoid surrogate (alpha = 4) in the LIF.
           Large matrices are stored in float16 (the loaders read them back as float32).
  finish / evaluate (CPU)  held-out loss / perplexity of the checkpoints through `ns_compile.models.load_model`
           vs the unigram baseline -> examples/data/metrics.json; `finish` copies trained weights
           from the GPU's output folder into examples/ first.

Evaluation protocol (training script, `evaluate` and tests/test_examples.py alike): the held-out
text is encoded as `[<|im_start|>] + encode(text)`, cut into consecutive windows of CONTEXT tokens,
each window run from a fresh state; the loss is the mean next-token cross-entropy over the
CONTEXT-1 predictions of every window. The unigram baseline scores the same targets with
add-one-smoothed token frequencies of the training ids.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DOC_PACKAGE = "python3.11-doc"
DOC_SOURCES = "usr/share/doc/python3.11/html/_sources"
SKIP_DOCS = {"license.rst.txt", "copyright.rst.txt", "contents.rst.txt", "whatsnew/changelog.rst.txt"}
HELDOUT_BYTES = 190_000          # committed held-out text stays under 200 KB
VOCAB_SIZE = 4096
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]   # ids 0..4, as NeuronSpark
BOS = "<|im_start|>"
CONTEXT = 128                    # training window (tokens); also the evaluation window
RELEASE = "3.11"

DATA = HERE / "data"
TOKENIZER_DIR = HERE / ".build" / "tokenizer"
BUILD = HERE / ".build"
NS_DIR = HERE / "neuronspark-demo"
NORD_DIR = HERE / "nord-demo"
NORD_FILE = "nord_final.pt"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# ---- model configurations --------------------------------------------------------------------------

NS_CONFIG = dict(vocab_size=VOCAB_SIZE, D=192, N=4, K=8, num_layers=4, D_ff=576, v_th_min=0.1)
NORD_CONFIG = dict(
    tokenizer_id="ns-compile/examples/tokenizer (byte-level BPE 4096, Python docs)",
    vocab_size=VOCAB_SIZE, d_model=256, n_heads=4, n_layers=4, d_ff=512, max_seq_len=CONTEXT,
    T=8, T_slow=2, persistent_mem=False, tau_mem=0.9, tau_syn=0.5, v_threshold=0.25, v_reset=-0.1,
    refractory_t=2, threshold_lr=0.01, n_clusters=16, cascade_radius=3, cascade_gain=0.8,
    stdp_a_plus=0.005, stdp_a_minus=0.005, stdp_tau_plus=20.0, stdp_tau_minus=20.0, stdp_w_max=1.0,
    stdp_w_min=-0.3, stdp_reward_scale=1.0, resonance_top_k=16, clamp_floor=-0.1, surrogate_alpha=4.0,
)
# optimisation (shared): AdamW(0.9, 0.95), linear warm-up then cosine decay over the wall-clock budget
TRAIN = {
    "ns": dict(batch=64, lr=1.5e-3, min_lr=1.5e-4, weight_decay=0.1, warmup=100, ponder_weight=0.01),
    "nord": dict(batch=64, lr=1.5e-3, min_lr=1.5e-4, weight_decay=0.1, warmup=100),
}
HALF_MIN_NUMEL = 4096            # tensors (2-D) at least this big are stored in float16


# =====================================================================================================
# corpus
# =====================================================================================================

_DROP = {"index", "toctree", "highlight", "sectionauthor", "moduleauthor", "testsetup", "testcleanup", "only",
         "tabularcolumns", "raw", "include", "literalinclude", "image", "figure", "module", "currentmodule",
         "program", "csv-table", "list-table", "audit-event-table", "miscnews", "c:namespace",
         "c:namespace-push", "c:namespace-pop", "default-role", "role", "literal-block", "limited-api-list",
         "availability", "audit-event"}
_LABEL = {"note": "Note:", "warning": "Warning:", "seealso": "See also:", "important": "Important:",
          "tip": "Tip:", "caution": "Caution:", "attention": "Attention:", "hint": "Hint:", "danger": "Danger:",
          "impl-detail": "CPython implementation detail:"}
_BODY_ONLY = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist",
              "parsed-literal", "container", "compound", "epigraph", "centered", "hlist", "glossary",
              "table"}
_ROLE = re.compile(r":[\w:.+-]+:`([^`]*)`")
_UNDERLINE = re.compile(r"^\s*([=\-*~^\"#+`':.])\1{2,}\s*$")
_GRID = re.compile(r"^\s*(\+[-=+]+\+|\|.*\|)\s*$")     # grid-table borders and rows


def _role_text(m: re.Match) -> str:
    t = m.group(1)
    title = re.match(r"^(.*?)\s*<[^<>]*>$", t, re.S)
    if title and title.group(1):
        return title.group(1)
    t = t.lstrip("!")
    if t.startswith("~"):
        t = t[1:].split(".")[-1]
    return t


def inline(line: str) -> str:
    line = _ROLE.sub(_role_text, line)
    line = re.sub(r"``(.+?)``", r"\1", line)
    line = re.sub(r"`([^`<]+?)\s*<[^`>]+>`_{1,2}", r"\1", line)
    line = re.sub(r"`([^`]+)`_{1,2}", r"\1", line)
    line = re.sub(r"`([^`]+)`", r"\1", line)
    line = re.sub(r"\s?\[(#\w*|\d+)\]_", "", line)
    line = line.replace("|release|", RELEASE).replace("|version|", RELEASE).replace("|today|", "")
    line = line.replace("\\ ", "")
    if line.strip() == "::":
        return ""
    line = re.sub(r"\s*::$", lambda m: "" if m.group(0).startswith(" ") else ":", line)
    return line.rstrip()


def _directive_text(name: str, arg: str) -> str:
    arg = inline(arg).strip()
    if name in _LABEL:
        return (_LABEL[name] + " " + arg).strip()
    if name == "versionadded":
        v, _, rest = arg.partition(" ")
        return f"New in version {v}." + (" " + rest if rest else "")
    if name == "versionchanged":
        v, _, rest = arg.partition(" ")
        return f"Changed in version {v}:" + (" " + rest if rest else "")
    if name == "deprecated":
        v, _, rest = arg.partition(" ")
        return f"Deprecated since version {v}:" + (" " + rest if rest else "")
    if name == "deprecated-removed":
        parts = arg.split(None, 2)
        if len(parts) >= 2:
            return f"Deprecated since version {parts[0]}, will be removed in version {parts[1]}:" + \
                (" " + parts[2] if len(parts) > 2 else "")
        return f"Deprecated since version {arg}:"
    if name in _BODY_ONLY:
        return ""
    if name == "admonition":
        return arg + ":" if arg else ""
    return arg       # object descriptions (function, class, ...): the signature; rubric, topic: the title


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_to_text(src: str) -> str:
    """reStructuredText -> plain text: roles and literals unwrapped, headings' rules, comments, labels,
    index entries and tables of contents dropped, admonitions and version notes spelled out the way
    Sphinx renders them, code blocks kept with their indentation."""
    lines = src.expandtabs(8).splitlines()
    out: list[str] = []
    skip_indent = None
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if skip_indent is not None:
            if not line.strip() or _indent(line) > skip_indent:
                i += 1
                continue
            skip_indent = None
        m = re.match(r"^(\s*)\.\.(?:\s+(.*))?$", line)
        if m:
            ind, rest = len(m.group(1)), (m.group(2) or "")
            dm = re.match(r"^([\w:.-]+)::\s*(.*)$", rest)
            if not dm:                                   # comment, target, substitution, footnote
                skip_indent = ind
                i += 1
                continue
            name, arg = dm.group(1).split(":")[-1] if dm.group(1).startswith(("c:", "py:", "std:")) \
                else dm.group(1), dm.group(2)
            if name in _DROP or dm.group(1) in _DROP:
                skip_indent = ind
                i += 1
                continue
            j = i + 1
            while arg.endswith("\\") and j < n:            # signature continued on the next line
                arg = arg[:-1].rstrip() + " " + lines[j].strip()
                j += 1
            while j < n and lines[j].strip() and _indent(lines[j]) > ind and \
                    not re.match(r"^\s*:[\w-]+:", lines[j]) and name not in _LABEL and \
                    name not in ("versionadded", "versionchanged", "deprecated", "deprecated-removed") and \
                    name not in _BODY_ONLY and not lines[j - 1].strip() == "" and \
                    _indent(lines[j]) >= ind + 4:
                # further signatures aligned under the first one (".. function:: a()\n              b()")
                out.append(" " * ind + _directive_text(name, lines[j].strip()))
                j += 1
            while j < n and re.match(r"^\s*:[\w-]+:", lines[j]) and _indent(lines[j]) > ind:
                j += 1                                   # directive options
            text = _directive_text(name, arg)
            if text:
                out.append(" " * ind + text)
            i = j
            continue
        if _UNDERLINE.match(line) or _GRID.match(line):
            i += 1
            continue
        out.append(inline(line))
        i += 1
    text = "\n".join(out)
    # constructs broken across lines
    text = _ROLE.sub(_role_text, text)
    text = re.sub(r"``([^`]{1,200}?)``", r"\1", text)
    text = re.sub(r"`([^`<]{1,200}?)\s*<[^`>]+>`_{1,2}", r"\1", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def fetch_deb(workdir: Path) -> Path:
    """`apt-get download python3.11-doc` into workdir (the candidate version of this machine's lists)."""
    try:
        subprocess.run(["apt-get", "download", DOC_PACKAGE], cwd=workdir, check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except (OSError, subprocess.CalledProcessError) as e:
        out = getattr(e, "stdout", b"") or b""
        sys.exit(f"error: `apt-get download {DOC_PACKAGE}` failed ({e}); run `apt-get update` first or pass "
                 f"--deb FILE\n{out.decode(errors='replace')}")
    debs = sorted(workdir.glob(f"{DOC_PACKAGE}_*.deb"))
    if not debs:
        sys.exit(f"error: apt-get download left no {DOC_PACKAGE}_*.deb in {workdir}")
    return debs[-1]


def deb_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                          text=True).stdout.strip()


def load_documents(deb: Path, workdir: Path) -> list[tuple[str, str]]:
    """[(path relative to _sources, plain text)] sorted by path."""
    dest = workdir / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    src = dest / DOC_SOURCES
    if not src.is_dir():
        sys.exit(f"error: {deb} has no {DOC_SOURCES}")
    docs = []
    for p in sorted(src.rglob("*.txt")):
        rel = p.relative_to(src).as_posix()
        if rel in SKIP_DOCS:
            continue
        text = rst_to_text(p.read_text(encoding="utf-8"))
        if len(text) > 200:
            docs.append((rel, text))
    return docs


def split_documents(docs):
    """Held-out = whole documents, picked in the order of sha1(path), each under 40 KB, until the
    held-out text reaches HELDOUT_BYTES; everything else is training text."""
    order = sorted(docs, key=lambda d: hashlib.sha1(d[0].encode()).hexdigest())
    held, size = [], 0
    for rel, text in order:
        b = len(text.encode("utf-8"))
        if b > 40_000 or size + b > HELDOUT_BYTES:
            continue
        held.append(rel)
        size += b
    held_set = set(held)
    train = [(r, t) for r, t in docs if r not in held_set]
    heldout = [(r, t) for r, t in docs if r in held_set]
    return train, heldout


def train_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}<|im_start|>system\n{{ message['content'] }}"
    "<|im_end|>\n{% elif message['role'] == 'user' %}<|im_start|>user\n{{ message['content'] }}<|im_end|>\n"
    "{% elif message['role'] == 'assistant' %}<|im_start|>assistant\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def save_tokenizer(tok, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {"add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
           "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<unk>",
           "additional_special_tokens": ["<s>", "</s>"], "model_max_length": CONTEXT * 8,
           "clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast",
           "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    smap = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
            "unk_token": "<unk>", "additional_special_tokens": ["<s>", "</s>"]}
    (out / "special_tokens_map.json").write_text(json.dumps(smap, indent=2) + "\n")


def heldout_stream(tokenizer, text: str) -> list[int]:
    """The evaluation token stream: <|im_start|> then the text (NeuronSpark's pretraining format)."""
    return [tokenizer.token_to_id(BOS)] + tokenizer.encode(text)


def cmd_prepare(args):
    import numpy as np
    from tokenizers import Tokenizer

    t0 = time.time()
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        deb = Path(args.deb).resolve() if args.deb else fetch_deb(work)
        version = deb_version(deb)
        docs = load_documents(deb, work)
    train, held = split_documents(docs)
    DATA.mkdir(parents=True, exist_ok=True)
    held_text = "\n\n".join(t.strip() for _r, t in held) + "\n"
    (DATA / "heldout.txt").write_text(held_text, encoding="utf-8")
    tok = train_tokenizer([t for _r, t in train])
    save_tokenizer(tok, TOKENIZER_DIR)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))   # exactly what the loaders will read
    bos = tok.token_to_id(BOS)
    ids = []
    for enc in tok.encode_batch([t for _r, t in train], add_special_tokens=False):
        ids.append(bos)
        ids.extend(enc.ids)
    train_ids = np.asarray(ids, dtype=np.uint16)
    held_ids = np.asarray([bos] + tok.encode(held_text, add_special_tokens=False).ids, dtype=np.uint16)
    BUILD.mkdir(parents=True, exist_ok=True)
    np.save(BUILD / "train_ids.npy", train_ids)
    np.save(BUILD / "heldout_ids.npy", held_ids)
    counts = np.bincount(train_ids.astype(np.int64), minlength=VOCAB_SIZE)
    uni = unigram_eval(counts, windows(held_ids.tolist(), CONTEXT))
    info = {
        "corpus": {"package": DOC_PACKAGE, "version": version, "sources": DOC_SOURCES,
                   "documents": len(docs), "train_documents": len(train), "heldout_documents": len(held),
                   "train_chars": sum(len(t) for _r, t in train), "heldout_chars": len(held_text),
                   "heldout_files": [r for r, _t in held]},
        "tokenizer": {"vocab_size": tok.get_vocab_size(), "train_tokens": int(train_ids.size),
                      "heldout_tokens": int(held_ids.size),
                      "chars_per_token_train": round(sum(len(t) for _r, t in train) / train_ids.size, 3)},
        "eval": {"context": CONTEXT, "predicted_tokens": uni["tokens"]},
        "unigram": {"loss": uni["loss"], "perplexity": uni["perplexity"], "smoothing": "add-one",
                    "counts_from": "training ids (one <|im_start|> before each document)"},
        "counts": counts.tolist(),
    }
    (DATA / "unigram.json").write_text(json.dumps(info, separators=(",", ":")) + "\n")
    print(f"corpus {DOC_PACKAGE} {version}: {len(docs)} documents, train {len(train)} "
          f"({info['corpus']['train_chars']:,} chars, {train_ids.size:,} tokens), held-out {len(held)} "
          f"({len(held_text):,} chars, {held_ids.size:,} tokens)")
    print(f"unigram baseline on held-out: loss {uni['loss']:.4f} nats, perplexity {uni['perplexity']:.1f}")
    print(f"prepare took {time.time() - t0:.0f} s")


# =====================================================================================================
# evaluation helpers (shared with tests/test_examples.py)
# =====================================================================================================

def windows(stream, context: int):
    """Consecutive non-overlapping windows of `context` tokens (the last partial one dropped)."""
    return [stream[i:i + context] for i in range(0, len(stream) - context + 1, context)]


def unigram_eval(counts, wins) -> dict:
    counts = [int(c) for c in counts]
    total = sum(counts) + len(counts)
    nll, n = 0.0, 0
    for w in wins:
        for t in w[1:]:
            nll -= math.log((counts[t] + 1) / total)
            n += 1
    loss = nll / n
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n}


def model_eval(logits_fn, wins, batch: int = 64) -> dict:
    """Mean next-token cross-entropy of `logits_fn(ids [B, T]) -> [B, T, V]` over the windows."""
    import torch

    nll, n = 0.0, 0
    for s in range(0, len(wins), batch):
        ids = torch.tensor(wins[s:s + batch], dtype=torch.long)
        lg = logits_fn(ids).float()
        lp = torch.log_softmax(lg[:, :-1], dim=-1)
        tgt = ids[:, 1:].to(lp.device)
        nll -= float(lp.gather(-1, tgt[..., None]).sum())
        n += tgt.numel()
    loss = nll / n
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n}


# =====================================================================================================
# models: parameters, init, training forward, export
# =====================================================================================================

def ensure_kernels():
    """Make `ns_compile.kernels` importable from a plain checkout (setup.py maps kernels/ there)."""
    try:
        import ns_compile.kernels  # noqa: F401
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location("ns_compile.kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["ns_compile.kernels"] = mod
        spec.loader.exec_module(mod)


def ns_init(cfg, generator):
    """NeuronSpark initialisation of research/neuronspark.md §8, as a dict of fp32 tensors."""
    import torch

    from ns_compile.models.neuronspark.shapes import shape_table

    g = generator
    D, N, DN, F, L, K = cfg.D, cfg.N, cfg.DN, cfg.D_ff, cfg.num_layers, cfg.K

    def kaiming(shape):           # PyTorch's Linear default: U(-1/sqrt(in), 1/sqrt(in))
        b = 1.0 / math.sqrt(shape[1])
        return (torch.rand(shape, generator=g) * 2 - 1) * b

    def xavier(shape):
        b = math.sqrt(6.0 / (shape[0] + shape[1]))
        return (torch.rand(shape, generator=g) * 2 - 1) * b

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g) * std + mean

    def plif_a(prefix, n, v0):
        w[prefix + ".w"] = normal((n,), 0.5)
        w[prefix + ".v_th"] = (0.5 + torch.rand((n,), generator=g)) * v0

    beta_n = torch.linspace(0.80, 0.99, N)
    p_n = torch.linspace(0.25, 0.08, N)
    sigma_v = math.sqrt(0.15 / 3) * torch.sqrt(1 - beta_n ** 32)
    b_th_n = torch.clamp(sigma_v * torch.distributions.Normal(0.0, 1.0).icdf(1 - p_n) - 0.1, min=0.05)
    out_scale_n = (1 / torch.sqrt(p_n)) / (1 / torch.sqrt(p_n)).mean()
    tile = lambda v: v.repeat(D)          # noqa: E731  hidden neuron j <-> n = j mod N

    w = {"embed_tokens.weight": normal((cfg.vocab_size, D), 0.02), "norm.gain": torch.ones(D),
         "decode_proj.weight": xavier((D, D)), "decode_proj.bias": torch.zeros(D),
         "output_norm.weight": torch.ones(D)}
    plif_a("output_neuron", D, 0.3)
    for i in range(L):
        p = f"layers.{i}."
        for norm in ("block_norm", "ffn_norm"):
            w[p + norm + ".weight"] = torch.ones(D)
        plif_a(p + "input_neuron1", D, 0.5)
        plif_a(p + "input_neuron2", D, 0.5)
        b = p + "snn_block."
        w[b + "W_in.weight"] = kaiming((DN, D)) * torch.sqrt(1 - tile(beta_n) ** 2)[:, None]
        for name in ("W_beta_x", "W_alpha_x", "W_th_x"):
            w[b + name + ".weight"] = kaiming((DN, D)) * 0.1
        w[b + "W_gate.weight"] = kaiming((D, D))
        w[b + "W_skip.weight"] = kaiming((D, D))
        w[b + "W_out.weight"] = kaiming((D, DN)) * tile(out_scale_n)[None, :]
        w[b + "b_beta"] = torch.logit(tile(beta_n)) + normal((DN,), 0.1)
        w[b + "b_alpha"] = normal((DN,), 0.1, 0.5413)
        w[b + "b_th"] = tile(b_th_n) + normal((DN,), 0.02)
        for halt in ("block_halt", "ffn_halt"):
            w[p + halt + ".weight"] = xavier((1, D)) * 0.01
            w[p + halt + ".bias"] = torch.full((1,), -3.5)
        for proj in ("block_out_proj", "ffn_out_proj"):
            w[p + proj + ".weight"] = normal((D, D), 0.02 / math.sqrt(2 * L))
        f = p + "snn_ffn."
        w[f + "gate_proj.weight"] = kaiming((F, D))
        w[f + "up_proj.weight"] = kaiming((F, D))
        w[f + "down_proj.weight"] = kaiming((D, F)) / math.sqrt(L)
        w[f + "skip_proj.weight"] = kaiming((D, D))
        plif_a(f + "gate_neuron", F, 0.15)
        plif_a(f + "up_neuron", F, 0.15)
    table = shape_table(cfg)
    assert set(w) == set(table), set(w) ^ set(table)
    assert all(tuple(w[k].shape) == s for k, s in table.items())
    return {k: w[k].float().contiguous() for k in table}


def ns_expected_frames(frames, halt_w, halt_b, K):
    """PonderNet expected frame count E[K] = sum_k (k+1) * lambda_hat_k per token (spec §3.5), the
    same halting distribution `reference.ponder_aggregate` weights the frames with."""
    import torch

    from ns_compile.models.neuronspark import reference as R

    S, B, D = frames.shape
    f = frames.reshape(S // K, K, B, D)
    p = torch.sigmoid(R.linear(f, halt_w, halt_b)).clamp(R.HALT_CLAMP, 1.0 - R.HALT_CLAMP)
    log_survive = torch.cumsum(torch.log1p(-p), dim=1)
    survival = torch.exp(torch.cat([torch.zeros_like(log_survive[:, :1]), log_survive[:, :-1]], dim=1))
    lam = p * survival
    lam_hat = lam / (lam.sum(dim=1, keepdim=True) + R.PONDER_EPS)
    k = torch.arange(1, K + 1, device=frames.device, dtype=lam_hat.dtype).view(1, K, 1, 1)
    return (lam_hat * k).sum(dim=1)           # [T, B, 1]


def ns_train_forward(w, cfg, ids):
    """The exact reference forward (`reference.forward_tokens`, fresh state) on differentiable weights,
    plus the mean PonderNet cost over every sublayer and token. Returns (logits [B, T, V], ponder)."""
    from ns_compile.models.neuronspark import reference as R

    readouts = []

    def probe(key, **t):                      # frame outputs before each PonderNet aggregation
        if key.endswith(".readout"):
            readouts.append((key, t["out"]))

    state = R.NSState.zeros(cfg, ids.shape[0], ids.device)
    logits = R.forward_tokens(w, cfg, ids, state, probe=probe)
    costs = []
    for key, f in readouts:
        layer, sub = key.split(".")[1], key.split(".")[2]          # layers.{i}.block|ffn.readout
        halt = f"layers.{layer}.{'block' if sub == 'block' else 'ffn'}_halt"
        costs.append(ns_expected_frames(f, w[halt + ".weight"], w[halt + ".bias"], cfg.K).mean())
    return logits, sum(costs) / len(costs)


def nord_make_config(overrides=None):
    from ns_compile.models.nord.config import build_config

    d = dict(NORD_CONFIG)
    d.update(overrides or {})
    return build_config(d, version="v3")


def nord_init(cfg, generator):
    """Nord v3 initialisation of research/nord.md §1.1 (Linear layers: PyTorch's default uniform;
    embedding N(0, 1), nn.Embedding's default). Returns (params fp32 dict, buffers dict)."""
    import torch

    from ns_compile.models.nord.shapes import buffer_shapes, param_shapes

    g = generator
    D, H, L, nc, r = cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.n_clusters, cfg.cascade_radius
    ring = torch.zeros(nc, nc)
    for c in range(nc):
        for o in range(1, r + 1):
            for s in (o, -o):
                ring[c, (c + s) % nc] = 1 - abs(o) / (r + 1)
    params = {}
    for key, (_comp, shape) in param_shapes(cfg).items():
        leaf = key.rsplit(".", 1)[-1]
        if key == "encoder.embed.weight":
            t = torch.randn(shape, generator=g)
        elif key == "encoder.drive_scale":
            t = torch.tensor(15.0)
        elif key == "encoder.slow_scale":
            t = torch.tensor(5.0)
        elif key in ("encoder.fast_basis", "encoder.slow_basis"):
            t = torch.randn(shape, generator=g) * 0.02
        elif leaf == "weight" and len(shape) == 2:
            t = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(shape[1])
        elif leaf == "weight":                       # LayerNorm
            t = torch.ones(shape)
        elif leaf == "bias":
            t = torch.zeros(shape)
        elif leaf == "threshold":
            t = torch.full(shape, cfg.v_threshold)
        elif leaf == "beta_mem_raw":
            t = torch.tensor(math.log(cfg.tau_mem / (1 - cfg.tau_mem + 1e-6)))
        elif leaf == "beta_syn_raw":
            t = torch.tensor(0.0)
        elif leaf == "neighbor_weights":
            t = ring.clone()
        elif leaf == "cluster_gain":
            t = torch.full(shape, cfg.cascade_gain)
        elif leaf == "resonance_temp":
            t = torch.tensor(1.0 / math.sqrt(D / H))
        elif leaf in ("gamma_attn", "gamma_ffn"):
            t = torch.full(shape, 0.1 / L)
        elif leaf == "floor":
            t = torch.full(shape, cfg.clamp_floor)
        elif leaf == "leak_raw":
            t = torch.full(shape, math.log(0.1 / 0.9))
        elif key == "readout_ema_raw":
            t = torch.tensor(1.4)
        else:
            raise KeyError(key)
        assert tuple(t.shape) == tuple(shape), key
        params[key] = t.float()
    buffers = {k: torch.arange(s[0]) % nc for k, (s, _req) in buffer_shapes(cfg).items()
               if k.endswith(".cluster_ids")}
    return params, buffers


def nord_train_model(cfg, sd, device):
    """The NordV3 reference in a training mode: its LIFs spike through the sigmoid surrogate
    (alpha = cfg.surrogate_alpha, nord.md §1.1) and their effective parameters are rebuilt from the
    live (trainable) state dict `sd` at every forward. Everything else is NordV3's own forward."""
    import torch

    from ns_compile.models.nord.lif import lif_run, make_lif, sigmoid_surrogate_spike
    from ns_compile.models.nord.v3 import NordV3

    alpha = float(cfg.surrogate_alpha)
    names = ["input_lif", "readout_lif"]
    for i in range(cfg.n_layers):
        names += [f"blocks.{i}.resonance.lif_q", f"blocks.{i}.resonance.lif_k", f"blocks.{i}.ffn.lif1",
                  f"blocks.{i}.ffn.lif2"]

    class NordV3Train(NordV3):
        def __init__(self):       # NordV3.__init__ would copy sd and freeze the LIF parameters
            self.cfg, self.device, self.sd = cfg, torch.device(device), sd
            self.lifs, self.persistent, self.lif_state = {}, False, {}

        def forward(self, ids, **kw):
            self.lifs = {n: make_lif(self.sd, n, cfg) for n in names}
            return super().forward(ids, **kw)

        def _lif(self, name, current, stats, trace=None, want_v=False):
            s, v, _end = lif_run(self.lifs[name], current.float(), None, stats, want_v=want_v,
                                 spike_fn=lambda x: sigmoid_surrogate_spike(x, alpha))
            return s, v

    return NordV3Train()


def to_storage(t):
    """Storage dtype of a trained tensor: float16 for big 2-D matrices, float32 otherwise."""
    import torch

    if t.is_floating_point() and t.dim() == 2 and t.numel() >= HALF_MIN_NUMEL:
        return t.detach().to(torch.float16).contiguous().cpu()
    return t.detach().contiguous().cpu()


def save_neuronspark(w, cfg, out: Path, extra: dict):
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {"model." + k: to_storage(v) for k, v in w.items()}
    save_file(tensors, str(out / "model.safetensors"))
    conf = {"model_type": "neuronspark", "architectures": ["NeuronSparkForCausalLM"], **cfg.sizes(),
            "torch_dtype": "float16", "_training_step": extra.get("steps", 0),
            "_tokens_seen": extra.get("tokens", 0)}
    (out / "config.json").write_text(json.dumps(conf, indent=2) + "\n")


def save_nord(params, buffers, cfg, out: Path, extra: dict):
    import torch

    from ns_compile.models.nord.config import config_to_dict

    out.mkdir(parents=True, exist_ok=True)
    sd = {}
    from ns_compile.models.nord.shapes import buffer_shapes, param_shapes
    bufs = buffer_shapes(cfg)
    for k in param_shapes(cfg):
        sd[k] = to_storage(params[k])
        # keep the upstream order: a LIF's cluster_ids buffer follows its parameters
        if k.endswith(".cluster_gain"):
            b = k[: -len("cluster_gain")] + "cluster_ids"
            if b in bufs:
                sd[b] = buffers[b].cpu()
    conf = config_to_dict(cfg)
    conf.update(batch_size=extra.get("batch", conf["batch_size"]), grad_accum=1,
                lr=extra.get("lr", conf["lr"]), max_steps=extra.get("steps", conf["max_steps"]))
    torch.save({"model_state_dict": sd, "config": conf}, out / NORD_FILE)


def storage_roundtrip(t):
    """The value the checkpoint will hold, back in fp32 (what evaluation must see)."""
    return to_storage(t).float().to(t.device)


# =====================================================================================================
# training
# =====================================================================================================

class Batches:
    def __init__(self, ids, batch, context, device, seed):
        import numpy as np
        import torch

        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.batch, self.context, self.device = batch, context, device
        self.g = torch.Generator().manual_seed(seed)

    def next(self):
        import torch

        hi = self.ids.numel() - self.context - 1
        starts = torch.randint(0, hi, (self.batch,), generator=self.g)
        x = torch.stack([self.ids[s:s + self.context] for s in starts.tolist()])
        return x.to(self.device, non_blocking=True)


def lr_at(step, frac, hp):
    if step < hp["warmup"]:
        return hp["lr"] * (step + 1) / hp["warmup"]
    c = 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return hp["min_lr"] + (hp["lr"] - hp["min_lr"]) * c


def make_optimizer(named, hp):
    import torch

    decay = [p for k, p in named.items() if p.dim() == 2 and p.numel() >= HALF_MIN_NUMEL]
    rest = [p for k, p in named.items() if not (p.dim() == 2 and p.numel() >= HALF_MIN_NUMEL)]
    fused = all(p.is_cuda for p in named.values())
    return torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                              {"params": rest, "weight_decay": 0.0}], lr=hp["lr"], betas=(0.9, 0.95),
                             eps=1e-8, fused=fused or None)


class Log:
    def __init__(self, path: Path | None):
        self.f = open(path, "a", buffering=1) if path else None

    def __call__(self, msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self.f:
            self.f.write(line + "\n")


def train_one(kind: str, args):
    """Train one model for `args.minutes` of wall-clock time; write its checkpoint + metrics."""
    import numpy as np
    import torch

    ensure_kernels()
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / f"train_{kind}.log")
    hp = dict(TRAIN[kind])
    if args.batch:
        hp["batch"] = args.batch
    context = args.context
    data = Path(args.data)
    train_ids = np.load(data / "train_ids.npy")
    held = np.load(data / "heldout_ids.npy").astype(np.int64).tolist()
    wins = windows(held, context)
    if args.eval_windows:
        wins = wins[:args.eval_windows]
    g = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60.0
    log(f"{kind}: device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), torch "
        f"{torch.__version__}, budget {budget:.0f} s, batch {hp['batch']} x {context} tokens, "
        f"{train_ids.size:,} training tokens, {len(wins)} held-out windows")

    if kind == "ns":
        from ns_compile.models.neuronspark import reference as R
        from ns_compile.models.neuronspark.config import NSConfig

        sizes = dict(NS_CONFIG)
        if args.tiny:
            sizes.update(D=48, N=2, K=4, num_layers=2, D_ff=96)
        cfg = NSConfig.from_dict(sizes, "NS_CONFIG")
        params = {k: torch.nn.Parameter(v.to(device)) for k, v in ns_init(cfg, g).items()}

        def loss_fn(ids):
            logits, ponder = ns_train_forward(params, cfg, ids[:, :-1])
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            return ce + hp["ponder_weight"] * ponder, ce, ponder

        def eval_logits(w):
            def fn(ids):
                st = R.NSState.zeros(cfg, ids.shape[0], device)
                return R.forward_tokens(w, cfg, ids.to(device), st)
            return fn
        n_params = sum(v.numel() for v in params.values())
    else:
        from ns_compile.models.nord.v3 import NordV3

        over = {"max_seq_len": context}
        if args.tiny:
            over.update(d_model=48, n_heads=2, n_layers=2, d_ff=96, n_clusters=8, resonance_top_k=8)
        cfg = nord_make_config(over)
        p0, buffers = nord_init(cfg, g)
        params = {k: torch.nn.Parameter(v.to(device)) for k, v in p0.items()}
        buffers = {k: v.to(device) for k, v in buffers.items()}
        sd = dict(params)
        sd.update(buffers)
        model = nord_train_model(cfg, sd, device)

        def loss_fn(ids):
            logits = model.forward(ids[:, :-1])
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            return ce, ce, None

        def eval_logits(w):
            ref = NordV3(cfg, {**w, **buffers}, device)
            return lambda ids: ref.forward(ids.to(device))
        n_params = sum(v.numel() for v in params.values())
    log(f"{kind}: {n_params:,} parameters")

    opt = make_optimizer(params, hp)
    batches = Batches(train_ids, hp["batch"], context + 1, device, args.seed + 1)
    t_start = time.time()
    step, tokens, ema, last_log = 0, 0, None, t_start
    history = []
    while True:
        elapsed = time.time() - t_start
        if elapsed >= budget or (args.max_steps and step >= args.max_steps):
            break
        lr = lr_at(step, elapsed / budget, hp)
        for grp in opt.param_groups:
            grp["lr"] = lr
        ids = batches.next()
        try:
            loss, ce, ponder = loss_fn(ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        except torch.cuda.OutOfMemoryError:
            if batches.batch <= 8:
                raise
            opt.zero_grad(set_to_none=True)
            batches.batch //= 2
            hp["batch"] = batches.batch
            torch.cuda.empty_cache()
            log(f"{kind}: out of memory at step {step}; batch halved to {batches.batch}")
            continue
        except Exception as e:
            if kind != "ns" or step > 0 or device != "cuda":
                raise
            # the Triton scans failed on this machine: fall back to the exact torch loop (slow)
            import ns_compile.kernels.plif as plif_dispatch
            plif_dispatch._triton_ok = False
            log(f"{kind}: Triton PLIF scan failed ({type(e).__name__}: {str(e)[:300]}); using the torch loop")
            opt.zero_grad(set_to_none=True)
            continue
        gn = torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        if not torch.isfinite(gn):
            log(f"{kind}: step {step}: non-finite gradient norm, step skipped")
            opt.zero_grad(set_to_none=True)
            step += 1
            continue
        opt.step()
        step += 1
        tokens += ids.shape[0] * context
        if step % 10 == 0 or step <= 3:
            c = ce.item()
            ema = c if ema is None else 0.9 * ema + 0.1 * c
            now = time.time()
            if now - last_log > args.log_every or step <= 3:
                last_log = now
                msg = f"{kind}: step {step} t {now - t_start:.0f}s loss {c:.4f} (ema {ema:.4f}) lr {lr:.2e} " \
                      f"gnorm {float(gn):.2f} tok/s {tokens / (now - t_start):,.0f}"
                if ponder is not None:
                    msg += f" E[K] {ponder.item():.2f}"
                log(msg)
                history.append({"step": step, "t": round(now - t_start, 1), "loss": round(ema, 4)})
    train_s = time.time() - t_start
    log(f"{kind}: trained {step} steps, {tokens:,} tokens in {train_s:.0f} s")

    # evaluate with the values the checkpoint stores (fp16 matrices), exact fp32 inference path
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        w_eval = {k: storage_roundtrip(v.detach()) for k, v in params.items()}
        ev = model_eval(eval_logits(w_eval), wins, batch=64)
    log(f"{kind}: held-out loss {ev['loss']:.4f} perplexity {ev['perplexity']:.2f} over {ev['tokens']} tokens")
    extra = {"steps": step, "tokens": tokens, "batch": hp["batch"], "lr": hp["lr"]}
    if kind == "ns":
        save_neuronspark(w_eval, cfg, out / "ns", extra)
    else:
        save_nord(w_eval, buffers, cfg, out / "nord", extra)
    metrics = {"model": kind, "parameters": n_params, "steps": step, "tokens": tokens, "train_seconds": round(train_s, 1),
               "batch": hp["batch"], "context": context, "hyper": hp, "heldout_gpu": ev, "history": history,
               "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    (out / f"metrics_{kind}.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"{kind}: done, total {time.time() - t_start:.0f} s")


def kernel_check(log):
    """Triton scan vs the exact torch loop (forward and surrogate backward) on this GPU."""
    import torch

    ensure_kernels()
    from ns_compile.kernels import plif_scan
    g = torch.Generator(device="cuda").manual_seed(0)
    S, C = 64, 300
    beta = torch.rand(S, C, device="cuda", generator=g).requires_grad_()
    u = (torch.randn(S, C, device="cuda", generator=g) * 0.5).requires_grad_()
    th = (torch.rand(S, C, device="cuda", generator=g) * 0.5 + 0.1).requires_grad_()
    res = {}
    for be in ("triton", "torch"):
        _s, v = plif_scan(beta, u, th, None, backend=be)
        gb, gu, gt = torch.autograd.grad((v * torch.linspace(-1, 1, C, device="cuda")).sum(), (beta, u, th))
        res[be] = (v.detach(), gb, gu, gt)
    d = [float((a - b).abs().max()) for a, b in zip(res["triton"], res["torch"])]
    log(f"kernel check (triton vs torch on GPU): max |diff| v {d[0]:.2e}, dbeta {d[1]:.2e}, du {d[2]:.2e}, "
        f"dtheta {d[3]:.2e}")


def cmd_train(args):
    if args.model != "both":
        return train_one(args.model, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "train_ns.log")
    try:
        import torch
        if torch.cuda.is_available():
            kernel_check(log)
    except Exception as e:  # report and go on: training would show the same problem
        log(f"kernel check failed: {type(e).__name__}: {e}")
    procs = []
    base = [sys.executable, str(Path(__file__).resolve()), "train", "--data", args.data, "--out", args.out,
            "--minutes", str(args.minutes), "--context", str(args.context), "--seed", str(args.seed),
            "--log-every", str(args.log_every)]
    if args.tiny:
        base.append("--tiny")
    if args.batch:
        base += ["--batch", str(args.batch)]
    if args.cpu:
        base.append("--cpu")
    if args.max_steps:
        base += ["--max-steps", str(args.max_steps)]
    if args.eval_windows:
        base += ["--eval-windows", str(args.eval_windows)]
    for kind in ("ns", "nord"):
        procs.append(subprocess.Popen(base + ["--model", kind]))
    rc = [p.wait() for p in procs]
    print(f"exit codes: ns {rc[0]}, nord {rc[1]}")
    sys.exit(max(rc))


# =====================================================================================================
# finishing on CPU: install the trained weights, evaluate through the loaders
# =====================================================================================================

def cmd_finish(args):
    src = Path(args.src)
    NS_DIR.mkdir(parents=True, exist_ok=True)
    NORD_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(src / "ns" / name, NS_DIR / name)
    shutil.copyfile(src / "nord" / NORD_FILE, NORD_DIR / NORD_FILE)
    for d in (NS_DIR, NORD_DIR):
        for name in TOKENIZER_FILES:
            shutil.copyfile(TOKENIZER_DIR / name, d / name)
    for name in ("metrics_ns.json", "metrics_nord.json", "train_ns.log", "train_nord.log"):
        if (src / name).exists():
            shutil.copyfile(src / name, DATA / name)
    cmd_evaluate(args)


def cmd_evaluate(args):
    import torch

    from ns_compile.models import load_model

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    uni = json.loads((DATA / "unigram.json").read_text())
    text = (DATA / "heldout.txt").read_text(encoding="utf-8")
    res = {"context": CONTEXT, "unigram": {}, "models": {}}
    for name, path in (("neuronspark", NS_DIR), ("nord", NORD_DIR / NORD_FILE)):
        h = load_model(path)
        stream = heldout_stream(h.tokenizer, text)
        wins = windows(stream, CONTEXT)
        if args.eval_windows:
            wins = wins[:args.eval_windows]
        t0 = time.time()
        ev = model_eval(lambda ids: h.logits(ids), wins, batch=32)
        ug = unigram_eval(uni["counts"], wins)
        info = h.inspect()
        params = info.get("parameters", {})
        total = params.get("total") if isinstance(params, dict) else params
        res["unigram"] = ug
        res["models"][name] = {"loss": ev["loss"], "perplexity": ev["perplexity"], "tokens": ev["tokens"],
                               "parameters": total, "file_bytes": sum(f.stat().st_size for f in
                                                                      (path if path.is_dir() else path.parent).iterdir()
                                                                      if f.name in ("model.safetensors", NORD_FILE)),
                               "eval_seconds_cpu": round(time.time() - t0, 1)}
        print(f"{name}: held-out loss {ev['loss']:.4f} perplexity {ev['perplexity']:.2f} over {ev['tokens']} tokens "
              f"(unigram {ug['loss']:.4f} / {ug['perplexity']:.1f}) [{time.time() - t0:.0f} s]")
    (DATA / "metrics.json").write_text(json.dumps(res, indent=1) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="corpus, tokenizer, token ids, unigram baseline (CPU)")
    p.add_argument("--deb", help=f"a downloaded {DOC_PACKAGE}_*.deb (default: apt-get download it)")
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("train", help="train the models (GPU)")
    p.add_argument("--model", choices=("ns", "nord", "both"), default="both")
    p.add_argument("--data", default=str(BUILD))
    p.add_argument("--out", default=str(BUILD / "out"))
    p.add_argument("--minutes", type=float, default=4.0, help="wall-clock training budget per model")
    p.add_argument("--context", type=int, default=CONTEXT)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--eval-windows", type=int, default=0)
    p.add_argument("--log-every", type=float, default=15.0)
    p.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke run)")
    p.add_argument("--cpu", action="store_true")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("finish", help="copy trained weights from the train --out folder into examples/, evaluate")
    p.add_argument("src")
    p.add_argument("--eval-windows", type=int, default=0)
    p.set_defaults(fn=cmd_finish)
    p = sub.add_parser("evaluate", help="held-out loss/perplexity of the committed checkpoints (CPU)")
    p.add_argument("--eval-windows", type=int, default=0)
    p.set_defaults(fn=cmd_evaluate)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
