"""Nord generation: greedy runs, STDP (teacher-forced), cache exactness, upstream samplers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import need_fixture
from ns_compile.models.base import GenerationConfig

ATOL = 1e-4


def _inputs(version):
    return json.loads(need_fixture("nord", version, "inputs.json").read_text())


def _load(*parts, **kw):
    from ns_compile.models.nord import load_nord
    return load_nord(need_fixture("nord", *parts), **kw)


@pytest.fixture(scope="module")
def v3():
    return _load("v3", "nord_final.pt")


@pytest.fixture(scope="module")
def v4():
    return _load("v42", "nord_v4_final.pt")


# ---- greedy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("use_cache", [True, False])
def test_v3_greedy_reproduces_upstream(v3, use_cache):
    inp = _inputs("v3")
    run = inp["runs"]["greedy"]
    ids = v3.generate(inp["inputs"]["prompt"], GenerationConfig(max_new_tokens=8), use_cache=use_cache)
    assert ids == run["generated_ids"]
    res = v3.last_generation
    assert res.context_lengths == run["context_lengths"]
    assert all(res.used_cache) == use_cache
    ref = np.load(need_fixture("nord", "v3", "greedy", "step_last_logits.npy"))
    assert np.abs(torch.stack(res.step_last_logits).numpy() - ref).max() <= ATOL


@pytest.mark.parametrize("run,sdpa", [("greedy_sdpa", True), ("greedy_topk", False)])
def test_v4_greedy_reproduces_upstream(run, sdpa):
    inp = _inputs("v42")
    h = _load("v42", "nord_v4_final.pt", use_sdpa=sdpa)
    ids = h.generate(inp["inputs"]["prompt"], GenerationConfig(max_new_tokens=8))
    assert ids == inp["runs"][run]["generated_ids"]
    ref = np.load(need_fixture("nord", "v42", run, "step_last_logits.npy"))
    assert np.abs(torch.stack(h.last_generation.step_last_logits).numpy() - ref).max() <= ATOL


# ---- incremental cache exactness -------------------------------------------------------------

@pytest.mark.parametrize("which", ["v3", "v4_sdpa", "v4_topk"])
def test_incremental_cache_equals_full_forward(v3, which):
    """Feeding tokens through the cache (prompt chunk, then one at a time) gives the same logits
    as one full forward over the whole sequence."""
    from ns_compile.models.nord.v3 import V3Cache
    from ns_compile.models.nord.v4 import V4Cache
    if which == "v3":
        m, ids = v3.model(), _inputs("v3")["inputs"]["main"][0]          # 20 > top-k 4
        cache = V3Cache()
    else:
        h = _load("v42", "nord_v4_final.pt", use_sdpa=which == "v4_sdpa")
        m, ids = h.model(), _inputs("v42")["inputs"]["main"][0]
        cache = V4Cache()
    with torch.no_grad():
        full = m.forward(torch.tensor([ids]))[0]
        parts = [m.forward(torch.tensor([ids[:5]]), cache=cache)[0]]
        for t in ids[5:]:
            parts.append(m.forward(torch.tensor([[t]]), cache=cache)[0])
    inc = torch.cat(parts, 0)
    assert cache.length == len(ids)
    assert float((inc - full).abs().max()) <= 1e-5


def test_cache_is_not_used_when_window_slides(v3):
    """The v3 chat keeps the first max(32, max_seq_len - max_new_tokens) prompt ids, and past
    max_seq_len re-runs the last max_seq_len tokens; so do we (cache only while it is exact)."""
    L = v3.config.max_seq_len                                   # 64
    with pytest.warns(UserWarning, match="truncated"):
        ids = v3.generate(list(range(40)), GenerationConfig(max_new_tokens=40))
    res = v3.last_generation
    assert res.truncated_prompt and res.context_lengths[0] == 32
    assert res.context_lengths == [min(32 + k, L) for k in range(40)]
    assert res.used_cache == [True] * 33 + [False] * 7
    # the last (windowed) step equals a plain forward on the window
    ctx = (list(range(32)) + ids)[-1 - L:-1]
    ref = v3.logits(torch.tensor([ctx]))[0, -1]
    assert float((res.step_last_logits[-1] - ref).abs().max()) <= 1e-6
    # and the step just before the slide (served by the cache) equals a full forward
    ctx = (list(range(32)) + ids)[:L]
    ref = v3.logits(torch.tensor([ctx]))[0, -1]
    assert float((res.step_last_logits[32] - ref).abs().max()) <= 1e-5


# ---- STDP ------------------------------------------------------------------------------------

def _run_stdp(run, gen, forced):
    inp = _inputs("v3")
    h = _load("v3", "nord_final.pt")
    d = need_fixture("nord", "v3", run)
    for l in range(2):
        assert np.array_equal(h.model().sd[f"blocks.{l}.resonance.W_v.weight"].numpy(),
                              np.load(d / f"W_v_block{l}_initial.npy"))
    snaps = []

    def on_step(step, res):
        snaps.append([h.model().sd[f"blocks.{l}.resonance.W_v.weight"].clone().numpy() for l in range(2)])

    ids = h.generate(inp["inputs"]["prompt"], gen, forced_ids=forced, on_step=on_step)
    res = h.last_generation
    assert not any(res.used_cache), "STDP must re-run the prefix (cache is stale)"
    assert ids == inp["runs"][run]["generated_ids"]
    ref_steps = inp["runs"][run]["steps"]
    for k, step in enumerate(ref_steps):
        proxy = step["loss_proxy_passed_to_stdp_update"]
        assert abs(res.loss_proxies[k] - proxy) <= 1e-5
        assert np.signbit(res.loss_proxies[k]) == np.signbit(proxy)
        for l, blk in enumerate(step["per_block"]):
            ours = res.stdp_records[k][l]
            assert abs(ours["ema_before"] - blk["ema_before"]) <= 1e-6
            assert abs(ours["ema_after"] - blk["ema_after"]) <= 1e-6
            if blk["reward"] is None:
                assert ours["reward"] is None
            else:
                assert abs(ours["reward"] - blk["reward"]) <= 1e-7
    for l in range(2):
        ref = np.load(d / f"W_v_block{l}_after_steps.npy")
        ours = np.stack([s[l] for s in snaps])
        assert np.abs(ours - ref).max() <= 1e-7
        pre = np.stack([r[l]["pre_mean"].numpy() for r in res.stdp_records])
        post = np.stack([r[l]["post_mean"].numpy() for r in res.stdp_records])
        assert np.abs(pre - np.load(d / f"pre_mean_block{l}.npy")).max() <= 1e-6
        assert np.abs(post - np.load(d / f"post_mean_block{l}.npy")).max() <= 1e-6
    ref = np.load(d / "step_last_logits.npy")
    assert np.abs(torch.stack(res.step_last_logits).numpy() - ref).max() <= ATOL
    return h, snaps


def test_v3_stdp_sampled_teacher_forced():
    inp = _inputs("v3")
    gen = GenerationConfig(max_new_tokens=3, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.3,
                           extra={"stdp": True})
    h, snaps = _run_stdp("stdp_sampled", gen, inp["runs"]["stdp_sampled"]["generated_ids"])
    # W_v really clamped to [-0.3, 1.0] over the whole matrix
    lo, hi = np.float32(-0.3), np.float32(1.0)
    assert all(s.min() >= lo and s.max() <= hi for step in snaps for s in step)
    assert (snaps[0][0] == lo).sum() > 0          # the clamp really bites
    # session semantics: reset_stdp() restores the checkpoint W_v
    h.reset_stdp()
    w0 = np.load(need_fixture("nord", "v3", "stdp_sampled", "W_v_block0_initial.npy"))
    assert np.array_equal(h.model().sd["blocks.0.resonance.W_v.weight"].numpy(), w0)
    assert h.stdp_state.loss_ema == 10.0


def test_v3_stdp_sampled_seeded_sampling_matches_upstream_stream():
    """Bonus: the seeded torch.Generator reproduces upstream's torch.manual_seed(2024) draws."""
    inp = _inputs("v3")
    h = _load("v3", "nord_final.pt")
    gen = GenerationConfig(max_new_tokens=3, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.3,
                           seed=2024, extra={"stdp": True})
    assert h.generate(inp["inputs"]["prompt"], gen) == inp["runs"]["stdp_sampled"]["generated_ids"]


def test_v3_stdp_greedy_one_hot_edge_case():
    _run_stdp("stdp_greedy", GenerationConfig(max_new_tokens=3, extra={"stdp": True}), None)


def test_v4_stdp_is_a_noop_with_warning(v4):
    inp = _inputs("v42")
    with pytest.warns(UserWarning, match="STDP"):
        ids = v4.generate(inp["inputs"]["prompt"], GenerationConfig(max_new_tokens=3, extra={"stdp": True}))
    assert ids == inp["runs"]["greedy_sdpa"]["generated_ids"][:3]


def test_generate_stats(v3):
    inp = _inputs("v3")
    v3.generate(inp["inputs"]["prompt"], GenerationConfig(max_new_tokens=3, extra={"stats": True}))
    st = v3.last_stats
    assert set(st["populations"]) >= {"input_lif", "blocks.0.resonance.lif_q", "blocks.1.ffn.lif2", "readout_lif"}
    # prompt (6 rows) then 2 single-token steps through the cache
    assert st["populations"]["input_lif"]["rows"] == 6 + 2
    assert 0 < st["mean_rate"] < 1


# ---- samplers (hand-computed expectations) ---------------------------------------------------

def test_v3_repetition_penalty_is_sign_aware_and_capped():
    from ns_compile.models.nord.generate import filtered_probs_v3
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    gen = GenerationConfig(temperature=1.0, repetition_penalty=2.0)
    hist = [0] * 7 + [1]                        # id 0 seen 7x -> capped at 5; id 1 once
    p = filtered_probs_v3(logits, hist, gen)
    expect = torch.softmax(torch.tensor([2.0 / 32, -4.0, 1.0, 0.5]), 0)
    assert torch.allclose(p, expect, atol=1e-7)
    # only the last 50 ids count
    p = filtered_probs_v3(logits, [0] + [3] * 50, gen)
    expect = torch.softmax(torch.tensor([2.0, -2.0, 1.0, 0.5 / 32]), 0)
    assert torch.allclose(p, expect, atol=1e-7)


def test_v3_topk_keeps_ties_and_topp_keeps_first():
    from ns_compile.models.nord.generate import filtered_probs_v3
    logits = torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0])
    p = filtered_probs_v3(logits, [], GenerationConfig(temperature=1.0, top_k=2))
    assert (p > 0).tolist() == [False, True, True, False, True]
    p = filtered_probs_v3(torch.tensor([10.0, 0.0, 0.0]), [], GenerationConfig(temperature=1.0, top_p=0.5))
    assert p.tolist() == [1.0, 0.0, 0.0]


def test_v4_penalty_is_sign_unaware_over_all_history():
    from ns_compile.models.nord.generate import filtered_probs_v4
    logits = torch.tensor([2.0, -2.0, 1.0])
    p = filtered_probs_v4(logits, [0, 1, 1, 1], GenerationConfig(temperature=1.0, repetition_penalty=2.0))
    assert torch.allclose(p, torch.softmax(torch.tensor([1.0, -1.0, 1.0]), 0), atol=1e-7)
