"""Exact reference logits of the tiny NeuronSpark fixture, through the CLI entry point."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _ns_helpers import load_tensors, run_cli
from ns_compile.models import load_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exact():
    from conftest import need_fixture
    d = need_fixture("neuronspark-tiny")
    return {"dir": d, "ids": json.loads((d / "input_ids.json").read_text()),
            "exact": np.load(d / "logits_exact.npy"), "fallback": np.load(d / "logits_cpu_fallback.npy")}


def test_cli_logits_match_exact_reference(exact, tmp_path, capsys):
    out = tmp_path / "logits.npy"
    code, _, err = run_cli(capsys, "logits", exact["dir"] / "checkpoint",
                           "--input-ids", exact["dir"] / "input_ids.json", "--out", out)
    assert code == 0, err
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (2, 16, 6144)
    dev = np.abs(got - exact["exact"]).max()
    assert dev <= 1e-4, dev
    # spot values and argmax of row 0 quoted in the spec (§9.4)
    np.testing.assert_allclose(got[0, 0, :4], [0.119485, -0.130904, 0.200878, -0.241165], atol=1e-5)
    assert got[0].argmax(-1).tolist() == [626, 5787, 3342, 5787, 480, 4544, 5866, 5353, 5408, 4617, 1529,
                                          751, 3936, 3003, 2747, 5353]
    # the upstream CPU fallback scan is a different (wrong) model: we must not reproduce it
    assert np.abs(got - exact["fallback"]).max() > 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["logits.npy"]   # no temporaries left


def test_incremental_equals_full_forward(exact):
    h = load_model(exact["dir"] / "checkpoint")
    ids = torch.tensor(exact["ids"])
    full = h.logits(ids)
    state = h.new_state(ids.shape[0])
    steps = [h.forward(ids[:, t:t + 1], state) for t in range(ids.shape[1])]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5
    # a prompt chunk followed by single steps carries the same state
    state = h.new_state(ids.shape[0])
    mixed = [h.forward(ids[:, :5], state)] + [h.forward(ids[:, t:t + 1], state) for t in range(5, 16)]
    assert (torch.cat(mixed, dim=1) - full).abs().max().item() <= 1e-5
    assert state.floats_per_sequence() == 2 * (2 * 64 + 512 + 2 * 192) + 64


def test_training_pth_gives_same_logits(exact, tmp_path):
    sd = {k[len("model."):]: v for k, v in load_tensors(exact["dir"] / "checkpoint").items()}
    cfg = json.loads((exact["dir"] / "checkpoint" / "config.json").read_text())
    pth = tmp_path / "tiny.pth"
    torch.save({"model_state_dict": sd, "optimizer_state": {}, "step": 3, "epoch": 0, "best_loss": 1.5,
                "tokens_seen": 10,
                "model_config": {k: cfg[k] for k in ("vocab_size", "D", "N", "K", "num_layers", "D_ff")}}, pth)
    h = load_model(pth)
    assert h.config.v_th_min == 0.1 and h.config.v_th_min_defaulted
    got = h.logits(torch.tensor(exact["ids"])).numpy()
    assert np.abs(got - exact["exact"]).max() <= 1e-4


def test_bfloat16_runs_close_to_fp32(exact, tmp_path, capsys):
    out = tmp_path / "bf16.npy"
    code, _, err = run_cli(capsys, "logits", exact["dir"] / "checkpoint", "--input-ids",
                           exact["dir"] / "input_ids.json", "--out", out, "--dtype", "bfloat16")
    assert code == 0, err
    got = np.load(out)
    assert got.dtype == np.float32
    dev = np.abs(got - exact["exact"]).max()
    assert 0 < dev < 0.2, dev     # bf16 matmuls: measurably different, still the same model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(exact):
    h = load_model(exact["dir"] / "checkpoint")
    got = h.logits(torch.tensor(exact["ids"]), device="cuda").numpy()
    assert np.abs(got - exact["exact"]).max() <= 1e-4


def test_long_inputs_are_chunked_exactly(exact, monkeypatch):
    """A prompt split into token chunks (bounded memory) carries the state: same logits."""
    import ns_compile.models.neuronspark.handle as handle_mod
    h = load_model(exact["dir"] / "checkpoint")
    ids = torch.tensor(exact["ids"])
    whole = h.logits(ids)
    # chunk = _CHUNK_ELEMENTS // (K * B * max(DN, 2 D_ff)) = 3 tokens here
    monkeypatch.setattr(handle_mod, "_CHUNK_ELEMENTS", 3 * 16 * 2 * 512)
    chunked = h.logits(ids)
    assert (chunked - whole).abs().max().item() <= 1e-5
    assert np.abs(chunked.numpy() - exact["exact"]).max() <= 1e-4
