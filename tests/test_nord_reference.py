"""Nord exact fp32 reference against the upstream fixtures (../shared/fixtures/nord).

Every recorded intermediate is compared: spike trains exactly, real tensors within 1e-4 (the
reference values came from the unmodified upstream code, not from this implementation).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import need_fixture

ATOL = 1e-4


def _inputs(version):
    return json.loads(need_fixture("nord", version, "inputs.json").read_text())


@pytest.fixture(scope="module")
def v3():
    from ns_compile.models.nord import load_nord
    return load_nord(need_fixture("nord", "v3", "nord_final.pt"))


@pytest.fixture(scope="module")
def v4():
    from ns_compile.models.nord import load_nord
    return load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"))


def compare_run(run_dir, trace, *, expect_keys=None):
    """Compare every .npy of a fixture run folder with the trace; return {name: max |diff|}."""
    files = sorted(run_dir.glob("*.npy"))
    assert files, f"no fixture files in {run_dir}"
    out = {}
    for f in files:
        key = f.name[:-4]
        assert key in trace, f"trace lacks {key}"
        ref = np.load(f)
        ours = trace[key].numpy()
        assert ours.shape == ref.shape, (key, ours.shape, ref.shape)
        if ref.dtype in (np.uint8, np.int64):
            mism = int((ours.astype(ref.dtype) != ref).sum())
            assert mism == 0, f"{key}: {mism} of {ref.size} entries differ"
            out[key] = 0.0
        else:
            inf_ref, inf_ours = np.isinf(ref), np.isinf(ours)
            assert (inf_ref == inf_ours).all(), f"{key}: -inf pattern differs"
            assert (np.sign(ref[inf_ref]) == np.sign(ours[inf_ours])).all()
            d = float(np.abs(np.where(inf_ref, 0, ref) - np.where(inf_ours, 0, ours)).max())
            assert d <= ATOL, f"{key}: max |diff| {d}"
            out[key] = d
    if expect_keys:
        for k in expect_keys:
            assert k in out
    return out


# ---- v3 --------------------------------------------------------------------------------------

def test_v3_main_logits_and_every_intermediate(v3):
    inp = _inputs("v3")
    logits, trace = v3.trace(torch.tensor(inp["inputs"]["main"]))
    assert logits.shape == (2, 20, 512) and logits.dtype == torch.float32
    diffs = compare_run(need_fixture("nord", "v3", "main"), trace,
                        expect_keys=["logits", "blocks.1.resonance.scores_post_topk", "readout_lif.v"])
    assert diffs["logits"] <= ATOL


def test_v3_native_cpu_topk_reference_is_not_what_we_match(v3):
    """Guards the tie policy: the lowest-index reference differs from the CPU top-k one."""
    inp = _inputs("v3")
    lg = v3.logits(torch.tensor(inp["inputs"]["main"])).numpy()
    ref = np.load(need_fixture("nord", "v3", "main", "logits.npy"))
    native = np.load(need_fixture("nord", "v3", "main_native_cpu_topk", "logits.npy"))
    assert np.abs(lg - ref).max() <= ATOL
    assert np.abs(lg - native).max() > 0.1


@pytest.mark.parametrize("run", ["len_eq_topk", "len_topk_plus1"])
def test_v3_short_sequences_around_topk(v3, run):
    inp = _inputs("v3")
    lg = v3.logits(torch.tensor(inp["inputs"][run])).numpy()
    ref = np.load(need_fixture("nord", "v3", run, "logits.npy"))
    assert lg.shape == ref.shape
    assert np.abs(lg - ref).max() <= ATOL


def test_v3_rows_are_independent(v3):
    inp = _inputs("v3")
    ids = torch.tensor(inp["inputs"]["main"])
    both = v3.logits(ids)
    for b in range(2):
        assert float((v3.logits(ids[b:b + 1]) - both[b:b + 1]).abs().max()) <= 1e-6


def test_v3_training_save_gives_identical_logits(v3):
    from ns_compile.models.nord import load_nord
    h = load_nord(need_fixture("nord", "v3", "nord_step_0000001.pt"))
    ids = torch.tensor(_inputs("v3")["inputs"]["main"])
    assert torch.equal(h.logits(ids), v3.logits(ids))
    info = h.inspect()
    assert set(info["checkpoint"]["ignored_top_level_keys"]) == {"step", "loss", "optimizer_state_dict",
                                                                 "scaler_state_dict"}


def test_v3_stats_match_upstream_rates(v3):
    inp = _inputs("v3")
    v3.logits(torch.tensor(inp["inputs"]["main"]), stats=True)
    st = v3.last_stats
    up = inp["runs"]["main"]["stats"]
    assert abs(st["populations"]["input_lif"]["rate"] - up["encoder_spike_rate"]) < 1e-6
    assert abs(st["readout_sparsity"] - up["sparsity"]) < 1e-6
    for name, p in st["populations"].items():
        assert 0.0 <= p["rate"] <= 1.0 and len(p["rate_per_t"]) == 10, name


# ---- v4.2 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("run,sdpa", [("main_sdpa", True), ("main_topk", False)])
def test_v4_main_logits_and_every_intermediate(v4, run, sdpa):
    inp = _inputs("v42")
    v4.use_sdpa = sdpa
    try:
        logits, trace = v4.trace(torch.tensor(inp["inputs"]["main"]))
    finally:
        v4.use_sdpa = True
    diffs = compare_run(need_fixture("nord", "v42", run), trace,
                        expect_keys=["logits", "association_blocks.0.moe.top_idx", "memory_cortex.read_attn",
                                     "memory_cortex.out"])
    assert diffs["logits"] <= ATOL


def test_v4_attention_path_default_comes_from_config(v4):
    assert v4.config.use_sdpa_attention is True and v4.use_sdpa is True
    from ns_compile.models.nord import load_nord
    h = load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"), use_sdpa=False)
    assert h.use_sdpa is False
    lg = h.logits(torch.tensor(_inputs("v42")["inputs"]["main"])).numpy()
    assert np.abs(lg - np.load(need_fixture("nord", "v42", "main_topk", "logits.npy"))).max() <= ATOL


def test_v4_persistent_memory_opt_in():
    """Opt-in upstream quirk: the memory LIF end state is reused by a call with the same row count."""
    from ns_compile.models.nord import load_nord
    h = load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"))
    d = need_fixture("nord", "v42", "persist")
    w = _inputs("v42")["inputs"]["window"][0]
    h.persistent = True
    l1 = h.logits(torch.tensor([w[:16]]))
    assert np.abs(l1.numpy() - np.load(d / "call1_logits.npy")).max() <= ATOL
    v, i = h.model().lif_state["memory_cortex.memory_lif"]
    assert np.abs(v.numpy() - np.load(d / "memory_lif_v_after_call1.npy")).max() <= 1e-6
    assert np.abs(i.numpy() - np.load(d / "memory_lif_i_after_call1.npy")).max() <= 1e-6
    l2 = h.logits(torch.tensor([w[1:17]]))
    assert np.abs(l2.numpy() - np.load(d / "call2_logits_carried.npy")).max() <= ATOL
    h.reset_state()
    l3 = h.logits(torch.tensor([w[1:17]]))
    assert np.abs(l3.numpy() - np.load(d / "call2_logits_fresh.npy")).max() <= ATOL
    # default (not persistent): every call is fresh
    h2 = load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"))
    h2.logits(torch.tensor([w[:16]]))
    assert np.abs(h2.logits(torch.tensor([w[1:17]])).numpy() - np.load(d / "call2_logits_fresh.npy")).max() <= ATOL
