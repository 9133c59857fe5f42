"""The chat-template conformance vector of spec §6."""
from __future__ import annotations

from ns_compile.models import load_model
from ns_compile.tokenizer import Tokenizer

MESSAGES = [{"role": "system", "content": "你是一个AI助手"}, {"role": "user", "content": "中国的首都是哪里？"}]
RENDERED = ("<|im_start|>system\n你是一个AI助手<|im_end|>\n<|im_start|>user\n中国的首都是哪里？<|im_end|>\n"
            "<|im_start|>assistant\n")
IDS = [3, 87, 93, 87, 88, 73, 81, 203, 638, 2355, 37, 45, 892, 701, 4, 203, 3, 89, 87, 3165, 203, 4067, 988,
       1320, 4855, 35, 4, 203, 3, 69, 87, 87, 77, 87, 88, 2513, 88, 203]


def test_chat_template_conformance_vector(ns_tiny):
    tok = Tokenizer.from_dir(ns_tiny)
    assert tok.render_chat(MESSAGES, add_generation_prompt=True) == RENDERED
    assert tok.apply_chat_template(MESSAGES, add_generation_prompt=True) == IDS
    assert tok.render_chat(MESSAGES, add_generation_prompt=False) == RENDERED[: -len("<|im_start|>assistant\n")]


def test_special_tokens_and_normalizer(ns_tiny):
    tok = Tokenizer.from_dir(ns_tiny)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (3, 4, 4)
    assert tok.vocab_size == 6144
    assert tok.encode("？") == [35] == tok.encode("?")          # NFKC
    assert tok.encode("!") == [5] and tok.encode("\n") == [203]


def test_handle_prompt_encoding(ns_tiny):
    h = load_model(ns_tiny)
    assert h.encode_prompt("中国的首都是哪里？", chat=True, system="你是一个AI助手") == IDS
    assert h.encode_prompt("!") == [3, 5]                       # pretraining format: bos + text
    assert h.decode([3, 5, 4]) == "!"
