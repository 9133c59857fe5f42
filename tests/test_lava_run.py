"""A hand-built quantized graph (one SNNBlock, one SNNFFN, the output stage; tiny sizes) on Lava,
per-population and fused: identical integer states at every frame, identical to the integer
emulator (sim/), and the float models close to the float IR interpreter."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import need_lava
from test_lava_graphs import tiny_ns_graph

pytestmark = pytest.mark.lava

PROMPT = [3, 5, 7, 1]
NEW = 3


def _emulator(g, ids):
    from ns_compile.sim import Emulator
    em = Emulator(g)
    st = em.new_state(1)
    trs, lgs = [], []
    for t in ids:
        lg, st, tr = em.step(torch.tensor([t]), st, trace=True)
        trs.append(tr)
        lgs.append(lg[0].numpy())
    return trs, lgs


def _assert_same_trace(lava_tr, emu_tr, exact=True):
    n_cmp = 0
    for n, tok in enumerate(lava_tr):
        for stage, pops in tok.items():
            for pop, d in pops.items():
                for key, arr in d.items():
                    e = emu_tr[n][stage][pop][key][:, 0, :].numpy()
                    if exact:
                        assert np.array_equal(arr, e), (n, stage, pop, key)
                    else:
                        assert np.allclose(arr, e, rtol=1e-9, atol=1e-9), (n, stage, pop, key)
                    n_cmp += 1
    return n_cmp


@pytest.fixture(scope="module")
def runs():
    need_lava()
    from ns_compile.backends.lava import run_artifact
    g = tiny_ns_graph(seed=1)
    out = {gr: run_artifact(g, PROMPT, granularity=gr, max_new_tokens=NEW, trace=True, timeout_s=120)
           for gr in ("fused", "population")}
    return g, out


def test_population_equals_fused_equals_emulator(runs):
    g, out = runs
    fused, pop = out["fused"], out["population"]
    ids = PROMPT + fused["ids"][:-1]
    emu_tr, emu_lg = _emulator(g, ids)
    assert len(fused["trace"]) == len(pop["trace"]) == len(ids)
    n = _assert_same_trace(fused["trace"], emu_tr)
    assert n == len(ids) * 15                       # every population: P, and V for the 5 PLIF ones
    _assert_same_trace(pop["trace"], emu_tr)
    assert fused["ids"] == pop["ids"]
    assert np.array_equal(fused["logits"], np.stack(emu_lg).astype(np.float32))
    assert np.array_equal(pop["logits"], fused["logits"])
    # the run is not trivial: hidden neurons fire (reset) and payloads move
    hid = np.concatenate([t["L0.block"]["L0.block.hid"]["P"] for t in fused["trace"]])
    assert np.count_nonzero(hid) > hid.size // 4


def test_schedule_and_process_counts(runs):
    _, out = runs
    assert out["fused"]["steps_per_token"] == 1 + 3 * 3 + 1
    assert out["population"]["steps_per_token"] == 1 + 3 * 3 + 2 + 2 + 1
    assert out["population"]["processes"] > out["fused"]["processes"]


def test_float_models_close_to_float_ir():
    need_lava()
    from ns_compile.backends.lava import run_artifact
    fg = tiny_ns_graph(seed=1, float_graph=True)
    res = run_artifact(fg, PROMPT, mode="float", granularity="fused", max_new_tokens=2, trace=True, timeout_s=120)
    emu_tr, emu_lg = _emulator(fg, PROMPT + res["ids"][:-1])
    _assert_same_trace(res["trace"], emu_tr, exact=False)
    assert np.allclose(res["logits"], np.stack(emu_lg), rtol=1e-5, atol=1e-5)
    pop = run_artifact(fg, PROMPT, mode="float", granularity="population", max_new_tokens=2, trace=True,
                       timeout_s=120)
    _assert_same_trace(pop["trace"], emu_tr, exact=False)
    assert pop["ids"] == res["ids"]


def test_mode_graph_mismatch_is_user_error():
    from ns_compile.backends.lava import run_artifact
    from ns_compile.errors import UserError
    with pytest.raises(UserError, match="quantized"):
        run_artifact(tiny_ns_graph(float_graph=True), PROMPT, mode="fixed")
    with pytest.raises(UserError, match="granularity"):
        run_artifact(tiny_ns_graph(), PROMPT, granularity="chip")
