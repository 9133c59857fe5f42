"""Lowering NeuronSpark → float IR, checked by the float IR interpreter against the upstream logits."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ns_compile.lower.neuronspark import lower_neuronspark
from ns_compile.models import load_model


@pytest.fixture(scope="module")
def tiny_graph():
    from conftest import need_fixture
    h = load_model(need_fixture("neuronspark-tiny", "checkpoint"))
    from ns_compile.lower import lower_handle
    return h, lower_handle(h)


def test_float_ir_matches_reference_logits(tiny_graph, ns_tiny_dir):
    from ns_compile.sim import Emulator
    _, g = tiny_graph
    ids = torch.tensor(json.loads((ns_tiny_dir / "input_ids.json").read_text()))
    ref = np.load(ns_tiny_dir / "logits_exact.npy")
    out = Emulator(g).forward(ids).numpy()
    err = float(np.abs(out - ref).max())
    print(f"float IR vs logits_exact: max |Δ| = {err:.3g}")
    assert out.shape == ref.shape
    assert err <= 1e-4


def test_graph_structure(tiny_graph):
    h, g = tiny_graph
    c = h.config
    g.validate()
    D, N, K, L, F = c.D, c.N, c.K, c.num_layers, c.D_ff
    assert len(g.stages) == 2 * L + 1
    # every on-chip matrix of the spec (§8) except the host-side ones (out_proj, decode_proj, head)
    assert g.synapse_count() == L * (5 * D * D * N + 2 * D * D + 3 * D * F + D * D)
    stateful = sum(p.size for p in g.populations.values() if p.kind.startswith("plif"))
    assert stateful == L * (2 * D + D * N + 2 * F) + D          # spec §3.9: 287,616 at 0.9B
    for st in g.stages:
        depths = [g.populations[p].depth for p in st.populations]
        assert depths == sorted(depths)
        assert g.populations[st.readout].depth == max(depths)
    assert g.populations["L0.block.out"].depth == 2 and g.synapses["L0.block.W_gate"].meta["delay"] == 1
    # the program alternates drive → stage → aggregation
    assert g.program[0] == "embed" and g.program[-3:] == ["decode", "lm_head", "sample"]


def test_shape_only_graph(tmp_path, ns_tiny):
    d = tmp_path / "cfg"
    d.mkdir()
    shutil.copy(ns_tiny / "config.json", d / "config.json")
    h = load_model(d, weights=False)
    from ns_compile.lower import lower_handle
    g = lower_handle(h)
    g.validate()
    assert g.meta["shape_only"]
    assert all(s.weight is None and s.shape for s in g.synapses.values())
    assert g.synapse_count() == lower_handle(load_model(ns_tiny)).synapse_count()


def test_shape_only_09b():
    cfg = {"vocab_size": 6144, "D": 896, "N": 8, "K": 16, "num_layers": 20, "D_ff": 2688}
    g = lower_neuronspark(cfg, None)
    g.validate()
    stateful = sum(p.size for p in g.populations.values() if p.kind.startswith("plif"))
    assert stateful == 287_616
