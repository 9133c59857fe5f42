"""Nord v3 lowering: the float IR reproduces the reference (fixture logits and spikes), shape-only
graphs, and the quantized emulator (incremental == full, 8-bit top-1 logged)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import subprocess
import sys

from conftest import need_fixture


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ns_compile", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def v3():
    d = need_fixture("nord", "v3")
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    h = load_model(d / "nord_final.pt")
    return d, h, lower_handle(h), json.loads((d / "inputs.json").read_text())


def test_float_ir_equals_reference_logits_and_spikes(v3):
    from ns_compile.sim import Emulator
    d, _h, g, inp = v3
    ids = torch.tensor(inp["inputs"]["main"])
    tr = {}
    lg = Emulator(g).forward(ids, trace=tr).numpy()
    ref = np.load(d / "main" / "logits.npy")
    assert np.abs(lg - ref).max() <= 1e-4
    # the spike trains (from the fixture files, never from our reference) agree exactly
    for key, (stage, pop) in {"input_lif.spikes": ("input", "input_lif"),
                              "blocks.0.resonance.lif_q.spikes": ("blocks.0.qk", "blocks.0.resonance.lif_q"),
                              "blocks.1.resonance.lif_k.spikes": ("blocks.1.qk", "blocks.1.resonance.lif_k"),
                              "blocks.0.ffn.lif1.spikes": ("blocks.0.ffn", "blocks.0.ffn.lif1"),
                              "blocks.1.ffn.out": ("blocks.1.ffn", "blocks.1.ffn.lif2"),
                              "readout_lif.spikes": ("readout", "readout_lif")}.items():
        assert np.array_equal(tr[stage][pop]["P"].numpy().astype(np.uint8), np.load(d / "main" / f"{key}.npy")), key
    v = np.load(d / "main" / "readout_lif.v.npy")
    assert np.abs(tr["readout"]["readout_lif"]["V"].numpy() - v).max() < 1e-5


def test_float_ir_other_inputs_and_greedy(v3):
    from ns_compile.sim import Emulator
    d, _h, g, inp = v3
    emu = Emulator(g)
    for name in ("len_eq_topk", "len_topk_plus1"):
        lg = emu.forward(torch.tensor(inp["inputs"][name])).numpy()
        assert np.abs(lg - np.load(d / name / "logits.npy")).max() <= 1e-4, name
    new, steps = emu.generate(inp["inputs"]["prompt"], 8, return_logits=True)
    assert new == inp["runs"]["greedy"]["generated_ids"]
    assert np.abs(steps.numpy() - np.load(d / "greedy" / "step_last_logits.npy")).max() <= 1e-4


def test_graph_structure(v3):
    _d, _h, g, _ = v3
    syn = g.synapses
    assert syn["blocks.0.ffn.down"].input_kind == "binary" and syn["blocks.0.ffn.down"].src == "blocks.0.ffn.lif1"
    assert syn["blocks.0.resonance.W_q"].src == "host:blocks.0.norm1" and syn["blocks.0.resonance.W_q"].input_kind == "graded"
    assert syn["blocks.0.ffn.up"].src == "host:blocks.0.norm2"
    casc = [s for s in syn.values() if s.meta.get("cascade")]
    assert len(casc) == len(g.populations) and all(s.src == s.dst and s.input_kind == "binary" for s in casc)
    assert {p.kind for p in g.populations.values()} == {"lif_nord"}
    assert all(st.drive_per_frame for st in g.stages)
    assert g.populations["readout_lif"].meta.get("emit_v")


def test_shape_only_and_plan_default_activity(tmp_path, v3):
    d, h, _g, _ = v3
    from ns_compile.lower import lower_handle
    gs = lower_handle(h, weights=False)
    assert gs.meta["shape_only"] and all(s.weight is None for s in gs.synapses.values())
    r = cli("plan", d / "nord_final.pt", "--hardware", "loihi2-chip", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert all(p["activity"] == 0.1 for p in res["populations"])          # the stated assumption


def test_v3_lowering_refuses_a_v4_config():
    d = need_fixture("nord", "v42")
    from ns_compile.errors import UserError
    from ns_compile.lower.nord import lower_nord
    from ns_compile.models import load_model
    with pytest.raises(UserError, match="lower_nord_v4|v4"):
        lower_nord(load_model(d / "nord_v4_final.pt").config, None)


def test_quantized_incremental_equals_full_and_top1(v3):
    from ns_compile.quant import quantize
    from ns_compile.sim import Emulator
    d, _h, g, inp = v3
    ids = torch.tensor(inp["inputs"]["main"])
    qg, rep = quantize(g, ids, weight_bits=8)
    assert qg.meta["activity"] and all(0 < a < 1 for a in qg.meta["activity"].values())
    assert set(rep["sparsity"]) == set(g.populations)
    emu = Emulator(qg)
    full = emu.forward(ids)
    st = emu.new_state(2)
    inc = torch.stack([emu.step(ids[:, t], st)[0] for t in range(ids.shape[1])], 1)
    assert torch.equal(full, inc.float())
    ref = np.load(d / "main" / "logits.npy")
    top1 = float((full.numpy().argmax(-1) == ref.argmax(-1)).mean())
    print(f"8-bit Nord v3 fixture: top-1 agreement with fp32 = {top1:.3f}, mean spike rate {rep['mean_spike_rate']}")
    assert top1 >= 0.5
