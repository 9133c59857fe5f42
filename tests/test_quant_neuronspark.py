"""Quantizing the tiny NeuronSpark fixture: error vs the fp32 reference, report contents, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ns_compile.errors import UserError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    from conftest import need_fixture

    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    d = need_fixture("neuronspark-tiny")
    h = load_model(d / "checkpoint")
    g = lower_handle(h)
    ids = torch.tensor(json.loads((d / "input_ids.json").read_text()))
    ref = np.load(d / "logits_exact.npy")
    from ns_compile.quant import quantize
    from ns_compile.quant.calibrate import DEFAULT_TEXT
    cal = torch.tensor([h.encode_prompt(DEFAULT_TEXT)])
    qg, rep = quantize(g, cal, weight_bits=8)
    return h, g, qg, rep, ids, ref


def test_8bit_vs_fp32_reference(tiny):
    from ns_compile.sim import Emulator
    _, _, qg, _, ids, ref = tiny
    emu = Emulator(qg)
    out = emu.forward(ids).numpy()
    top1 = float((out.argmax(-1) == ref.argmax(-1)).mean())
    err = np.abs(out - ref)
    cos = float(np.mean(np.sum(out * ref, -1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(ref, axis=-1)))
    print(f"8-bit emulator vs fp32 reference: top-1 agreement {top1:.3f}, max |Δ| {err.max():.4f}, "
          f"mean |Δ| {err.mean():.5f}, mean cosine {cos:.5f}")
    assert err.max() > 0                          # a real quantized model, not the float one
    assert top1 >= 0.7 and cos > 0.98 and err.max() < 0.3
    assert all(v >= 0 for c in emu.counters.values() for v in c.values())
    act = emu.activity()
    assert set(act) == set(qg.populations) and all(0 <= a <= 1 for a in act.values())


def test_report_contents(tiny):
    _, g, qg, rep, _, _ = tiny
    assert rep["weight_bits"] == 8 and rep["calibration_tokens"] > 100
    assert set(rep["synapses"]) == set(g.synapses)
    for name, e in rep["synapses"].items():
        s = qg.synapses[name]
        assert s.weight.dtype == np.int8 and np.abs(s.weight.astype(int)).max() <= 128
        assert e["weight_exp"] == s.weight_exp()
        assert 0 < e["rel_err_rms"] < 0.05 and 0 <= e["clipped_frac"] < 0.01
    for o in rep["overflow"]:
        assert o["group"] in g.synapses and o["factor"] > 1 and o["case"] in ("worst", "calibration")
    # the hidden readout W_out (fan-in DN) can leave 24 bits in the worst case: it must be reported
    assert any(o["group"] == "L0.block.W_out" for o in rep["overflow"])
    for p in qg.populations.values():
        assert p.fmt and ("payload_bits" in p.fmt)
    assert qg.populations["L0.ffn.prod"].fmt["exp"] == 13
    assert set(rep["layers"]) >= {"L0", "L1"}
    from ns_compile.quant import format_report
    txt = format_report(rep)
    assert "L0" in txt and "overflow" in txt
    json.dumps(rep)                                # JSON-able


def test_fewer_bits_more_error(tiny):
    from ns_compile.quant import quantize
    _, g, _, rep8, ids, _ = tiny
    q4, rep4 = quantize(g, ids[:1, :8], weight_bits=4)
    assert all(s.fmt["bits"] == 4 and np.abs(s.weight.astype(int)).max() <= 8 for s in q4.synapses.values())
    e4 = max(e["rel_err_rms"] for e in rep4["synapses"].values())
    e8 = max(e["rel_err_rms"] for e in rep8["synapses"].values())
    assert e4 > 4 * e8


@pytest.mark.parametrize("bits", [1, 9, 0, "8"])
def test_bits_out_of_range(tiny, bits):
    from ns_compile.quant import quantize
    _, g, _, _, ids, _ = tiny
    with pytest.raises(UserError):
        quantize(g, ids[:1, :4], weight_bits=bits)


def test_empty_calibration(tiny):
    from ns_compile.quant import quantize
    _, g, _, _, _, _ = tiny
    with pytest.raises(UserError):
        quantize(g, torch.zeros(1, 0, dtype=torch.long))
