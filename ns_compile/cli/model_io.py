"""Helpers shared by the model commands (inspect, logits, generate): options and input files."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ns_compile.errors import UserError

DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}


def device_option(f):
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                        help="Where the reference model runs.")(f)


def dtype_option(f):
    return click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True,
                        help="Compute dtype of the weights/matmuls. bfloat16 keeps scans, norms and the "
                             "membrane state in float32 (like upstream autocast).")(f)


def torch_dtype(name: str):
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def read_json(path: str | Path):
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("no such file", p) from None
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror}", p) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"not valid JSON ({e})", p) from None


def _is_id(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_row(row, path, where: str, vocab_size: int | None) -> list[int]:
    if not isinstance(row, list):
        raise UserError(f"{where} is not a list of token ids", path)
    if not row:
        raise UserError(f"{where} is empty", path)
    for j, x in enumerate(row):
        if not _is_id(x):
            raise UserError(f"{where}[{j}] = {x!r} is not an integer token id", path)
        if vocab_size is not None and not 0 <= x < vocab_size:
            raise UserError(f"{where}[{j}] = {x} is outside the vocabulary [0, {vocab_size})", path)
    return row


def read_id_batch(path, vocab_size: int | None) -> list[list[int]]:
    """A JSON list of equal-length lists of token ids: [[...], [...]]."""
    data = read_json(path)
    if not isinstance(data, list) or not data or not all(isinstance(r, list) for r in data):
        raise UserError("expected a non-empty JSON list of lists of token ids, e.g. [[3, 87, 93]]", path)
    rows = [check_row(r, path, f"row {i}", vocab_size) for i, r in enumerate(data)]
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise UserError(f"rows have different lengths {sorted(lengths)} (ragged input; all rows must be "
                        "equally long, there is no padding)", path)
    return rows


def read_prompt_ids(path, vocab_size: int | None) -> list[int]:
    """A JSON list of ids, or a list holding exactly one list of ids."""
    data = read_json(path)
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]
    elif isinstance(data, list) and data and all(isinstance(r, list) for r in data):
        raise UserError(f"generate takes one prompt, got {len(data)} rows", path)
    return check_row(data, path, "prompt", vocab_size)
