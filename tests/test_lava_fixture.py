"""Key acceptance test: the upstream NeuronSpark-tiny checkpoint, lowered and quantized, on Lava
fixed point at both granularities vs the integer emulator: identical integer states at every
frame and identical greedy tokens (a short default run; the 32-token run is marked slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import need_fixture, need_lava

pytestmark = pytest.mark.lava


@pytest.fixture(scope="module")
def qgraph():
    ns_tiny_dir = need_fixture("neuronspark-tiny")
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.quant import quantize
    ids = json.loads((ns_tiny_dir / "input_ids.json").read_text())
    g = lower_handle(load_model(ns_tiny_dir / "checkpoint"))
    qg, _ = quantize(g, torch.tensor(ids))
    return qg, ids[0][:4]


def _emu(qg, prompt, n_new):
    from ns_compile.sim import Emulator
    em = Emulator(qg)
    gen = em.generate(prompt, max_new_tokens=n_new, temperature=0)
    st = em.new_state(1)
    trs = []
    for t in prompt + gen[:-1]:
        _, st, tr = em.step(torch.tensor([t]), st, trace=True)
        trs.append(tr)
    return gen, trs


def _check(qg, prompt, n_new, trace):
    from ns_compile.backends.lava import run_artifact
    need_lava()
    gen, trs = _emu(qg, prompt, n_new)
    for gran in ("fused", "population"):
        res = run_artifact(qg, prompt, granularity=gran, max_new_tokens=n_new, trace=trace, return_info=True,
                           timeout_s=600)
        assert res["ids"] == gen, gran
        if trace:
            assert len(res["trace"]) == len(trs)
            for n, tok in enumerate(res["trace"]):
                assert set(tok) == {s.name for s in qg.stages}
                for stage, pops in tok.items():
                    for pop, d in pops.items():
                        for key, arr in d.items():
                            assert np.array_equal(arr, trs[n][stage][pop][key][:, 0, :].numpy()), \
                                (gran, n, stage, pop, key)


def test_tiny_checkpoint_lava_equals_emulator_short(qgraph):
    qg, prompt = qgraph
    _check(qg, prompt, 3, trace=True)


@pytest.mark.slow
def test_tiny_checkpoint_lava_equals_emulator_32_greedy(qgraph):
    qg, prompt = qgraph
    _check(qg, prompt, 32, trace=True)


@pytest.fixture(scope="module")
def demo_qgraph():
    """A second model of our own: the trained NeuronSpark demo (examples/), calibrated on held-out text."""
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    ckpt = repo / "examples" / "neuronspark-demo"
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.quant import quantize
    h = load_model(ckpt)
    text = (repo / "examples" / "data" / "heldout.txt").read_text()[:2000]
    cal = h.tokenizer.encode(text)[:256]
    qg, _ = quantize(lower_handle(h), torch.tensor([cal]))
    return qg, h.tokenizer.encode("The os module provides")


@pytest.mark.slow
def test_demo_model_lava_equals_emulator_32_greedy(demo_qgraph):
    qg, prompt = demo_qgraph
    _check(qg, prompt, 32, trace=True)
