"""Pair metrics on synthetic traces; expected values are computed by hand here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ns_compile.errors import UserError
from ns_compile.verify.compare import check_tolerances
from ns_compile.verify.metrics import (compare_traces, greedy_metrics, logits_metrics, pairs_for, perplexity,
                                       worst_first)
from ns_compile.verify.report import format_table, sanitize, to_json

from _verify_helpers import FRAC, K, copy_trace, make_integer_trace


def test_identical_integer_traces_are_bit_exact():
    a = make_integer_trace("emulator")
    b = copy_trace(a, "lava-sim-fixed")
    r = compare_traces(a, b)
    assert r["bit_exact"] is True and r["first_divergence"] is None
    assert r["kl"] == 0.0 and r["top1_agreement"] == 1.0
    assert all(x["max_err"] == 0 and x["int_mismatches"] == 0 for x in r["layers"])
    assert all(x["hamming"] == 0 for x in r["layers"] if "hamming" in x)


def test_one_integer_step_is_located():
    a = make_integer_trace("emulator")
    b = copy_trace(a, "lava-sim-fixed")
    # one state one LSB off in layer 1's hidden population, row 1, token 2, frame 1, neuron 3 ...
    b.entries["layers.1.block.hidden"].arrays["v_int"][1, 2, 1, 3] += 1
    b.entries["layers.1.block.hidden"].arrays["v"][1, 2, 1, 3] += 2.0 ** -FRAC
    # ... and a later-in-time change in layer 0 (token 2, frame 3): layer 1 token 2 frame 1 is not
    # earlier in execution order than layer 0 token 2 frame 3 (layer 0 runs all its frames first)
    b.entries["layers.0.block.input"].arrays["v_int"][0, 2, 3, 0] -= 5
    r = compare_traces(a, b)
    assert r["bit_exact"] is False
    assert r["first_divergence"]["layer"] == "layers.0.block.input"
    assert (r["first_divergence"]["token"], r["first_divergence"]["frame"]) == (2, 3)
    rows = {x["population"]: x for x in r["layers"]}
    h = rows["layers.1.block.hidden"]
    assert h["int_mismatches"] == 1
    assert h["first_divergent_frame"] == {"row": 1, "token": 2, "frame": 1, "global_frame": 2 * K + 1}
    assert h["max_err"] == pytest.approx(2.0 ** -FRAC)
    n = h["size"] * 2 * 3 * K
    assert h["rms_err"] == pytest.approx(math.sqrt((2.0 ** -FRAC) ** 2 / n))
    assert rows["layers.0.ffn.gate"]["first_divergent_frame"] is None
    # an earlier token wins over any layer
    b.entries["decode.output"].arrays["v_int"][0, 0, 2, 0] += 1
    r = compare_traces(a, b)
    assert r["first_divergence"]["layer"] == "decode.output" and r["first_divergence"]["token"] == 0


def test_spike_agreement_and_hamming():
    a = make_integer_trace()
    b = copy_trace(a, "lava-sim-fixed")
    s = b.entries["layers.0.ffn.gate"].arrays["spikes"]
    s[0, 0, 0, :3] ^= 1
    r = compare_traces(a, b)
    g = next(x for x in r["layers"] if x["population"] == "layers.0.ffn.gate")
    assert g["hamming"] == 3
    assert g["spike_agreement"] == pytest.approx(1 - 3 / s.size)
    assert g["per_token"][0]["hamming"] == 3 and g["per_token"][1]["hamming"] == 0


def test_float_divergence_uses_tolerance():
    a = make_integer_trace("reference")
    a.meta["integer"] = False
    b = copy_trace(a, "emulator")
    b.meta["integer"] = True
    v = b.entries["layers.0.block.hidden"].arrays["v"]
    scale = np.abs(a.entries["layers.0.block.hidden"].arrays["v"]).max()
    v[0, 1, 2, 0] += 0.5e-3 * scale          # below rtol = 1e-3 of max|a|
    v[0, 2, 0, 0] += 2e-3 * scale            # above
    r = compare_traces(a, b, rtol=1e-3)
    assert r["bit_exact"] is False and r["integer"] is False
    h = next(x for x in r["layers"] if x["population"] == "layers.0.block.hidden")
    assert h["integer_compared"] is False
    assert (h["first_divergent_frame"]["token"], h["first_divergent_frame"]["frame"]) == (2, 0)
    assert h["max_err"] == pytest.approx(2e-3 * scale, rel=1e-5)


def test_logits_metrics_by_hand():
    la = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]]]))
    lb = np.log(np.array([[[0.25, 0.75], [0.8, 0.2]]]))
    m = logits_metrics(la, lb)
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl1 = 0.9 * math.log(0.9 / 0.8) + 0.1 * math.log(0.1 / 0.2)
    assert m["kl"] == pytest.approx((kl0 + kl1) / 2)
    assert m["kl_max"] == pytest.approx(max(kl0, kl1))
    # argmax ties resolve to the lowest index: position 0 is [0.5, 0.5] -> 0 vs 1; position 1 agrees
    assert m["top1_agreement"] == 0.5


def test_perplexity_and_greedy_by_hand():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = np.array([[0, 1, 2]])
    assert perplexity(logits, ids) == pytest.approx(math.exp(-(math.log(0.25) + math.log(0.8)) / 2))
    assert perplexity(logits[:, :1], ids[:, :1]) is None
    g = greedy_metrics({"tokens": [1, 2, 3, 4]}, {"tokens": [1, 2, 5, 4]})
    assert g["common_prefix"] == 2 and g["agreement"] == 0.5 and g["positionwise_agreement"] == 0.75
    assert greedy_metrics(None, {"tokens": [1]}) is None


def test_pairs_and_worst_first():
    assert pairs_for(["reference", "emulator", "lava-sim-fixed"]) == [
        ("reference", "emulator"), ("reference", "lava-sim-fixed"), ("emulator", "lava-sim-fixed")]
    assert pairs_for(["reference"]) == []
    rows = [{"population": "a", "rel_rms_err": 0.1}, {"population": "b", "rel_rms_err": 0.5},
            {"population": "c", "rel_rms_err": math.inf}, {"population": "d", "rel_rms_err": 0.1, "hamming": 4}]
    assert [r["population"] for r in worst_first(rows)] == ["c", "b", "d", "a"]


def test_different_inputs_are_rejected():
    a = make_integer_trace()
    b = make_integer_trace(seed=1)
    with pytest.raises(UserError, match="different input ids"):
        compare_traces(a, b)


def test_tolerances():
    a = make_integer_trace("emulator")
    b = copy_trace(a, "lava-sim-fixed")
    b.logits[0, 0] = b.logits[0, 0][::-1]
    b.entries["layers.0.block.hidden"].arrays["v_int"][0, 0, 0, 0] += 1
    r = [compare_traces(a, b)]
    assert check_tolerances(r) == []
    fails = check_tolerances(r, max_kl=0.0, max_top1_drop=0.0, require_bit_exact=True)
    assert len(fails) == 3 and "not bit-exact" in fails[2] and "layers.0.block.hidden" in fails[2]
    assert check_tolerances(r, max_kl=1e9, max_top1_drop=1.0) == []
    fl = dict(r[0], integer=False)
    with pytest.raises(UserError, match="two integer stages"):
        check_tolerances([fl], require_bit_exact=True)


def test_table_and_json_render():
    a = make_integer_trace("emulator")
    b = copy_trace(a, "lava-sim-fixed")
    b.entries["layers.0.block.hidden"].arrays["v_int"][0, 1, 2, 0] += 1
    r = compare_traces(a, b)
    text = format_table([r])
    assert "emulator vs lava-sim-fixed" in text and "bit-exact: no" in text
    first_row = text.splitlines()[6]
    assert first_row.strip().startswith("layers.0.block.hidden")     # worst first
    import json
    doc = json.loads(to_json(sanitize([r])))
    p = doc["pairs"][0]
    assert {"a", "b", "top1_agreement", "kl", "bit_exact", "first_divergence", "layers"} <= set(p)
    assert p["first_divergence"]["layer"] == "layers.0.block.hidden" and p["first_divergence"]["frame"] == 2
