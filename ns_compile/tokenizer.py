"""Tokenizers of Hugging Face layout without `transformers`.

`tokenizer.json` is run by the `tokenizers` library; `tokenizer_config.json` supplies the
special-token names and the Jinja chat template, rendered the way Hugging Face renders it
(a sandboxed environment with `trim_blocks` and `lstrip_blocks`, the special tokens as variables).
The rendered text is then encoded without adding special tokens, as `apply_chat_template` does:
special tokens written in the text (`<|im_start|>`, ...) are matched as added tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ns_compile.errors import UserError

_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_text(value) -> str | None:
    """Special tokens are stored either as a string or as an AddedToken dict {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class Tokenizer:
    """`Tokenizer.from_dir(dir)` or `Tokenizer(tokenizer_json, tokenizer_config_json=None)`."""

    def __init__(self, tokenizer_json: str | Path, tokenizer_config_json: str | Path | None = None):
        from tokenizers import Tokenizer as _HFTokenizer

        self.path = Path(tokenizer_json)
        try:
            self._tok = _HFTokenizer.from_file(str(self.path))
        except Exception as e:  # the library raises plain Exceptions with long messages
            raise UserError(f"cannot read tokenizer: {str(e).splitlines()[0]}", self.path) from None
        self.config: dict = {}
        self.config_path = Path(tokenizer_config_json) if tokenizer_config_json else None
        if self.config_path is not None and self.config_path.exists():
            try:
                self.config = json.loads(self.config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UserError(f"not valid JSON ({e})", self.config_path) from None
            if not isinstance(self.config, dict):
                raise UserError("expected a JSON object", self.config_path)
        self.special_tokens: dict[str, str] = {}
        for name in _SPECIAL_NAMES:
            text = _token_text(self.config.get(name))
            if text is not None:
                self.special_tokens[name] = text
        self.chat_template: str | None = self.config.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: use "default"
            named = {t.get("name"): t.get("template") for t in self.chat_template if isinstance(t, dict)}
            self.chat_template = named.get("default")

    @classmethod
    def from_dir(cls, directory: str | Path) -> "Tokenizer | None":
        """The tokenizer stored in `directory`, or None when it has no tokenizer.json."""
        d = Path(directory)
        if not (d / "tokenizer.json").is_file():
            return None
        return cls(d / "tokenizer.json", d / "tokenizer_config.json")

    # ---- ids ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _special_id(self, name: str) -> int | None:
        text = self.special_tokens.get(name)
        return None if text is None else self._tok.token_to_id(text)

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    # ---- text <-> ids ------------------------------------------------------------------------
    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- chat ----------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
        """The chat template applied to `messages` ([{"role": ..., "content": ...}, ...])."""
        if not self.chat_template:
            where = self.config_path or self.path
            raise UserError("the tokenizer has no chat_template", where)
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise UserError(f"chat template: {message}", self.config_path)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        try:
            template = env.from_string(self.chat_template)
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   **self.special_tokens)
        except jinja2.TemplateError as e:
            raise UserError(f"chat template error: {e}", self.config_path) from None

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt=add_generation_prompt))
