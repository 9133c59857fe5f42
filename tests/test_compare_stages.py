"""compare/trace end to end on compiled artifacts: the conformance fixture and a random model of our own.

Expected values come from the contract (docs/fixed_point.md) or from the traces themselves, never
from the metrics under test.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import need_lava
from _ns_helpers import run_cli
from _random_ns import make_random_checkpoint

IDS = [[3, 87, 93, 87, 88, 73], [3, 100, 200, 300, 400, 500]]
RIDS = [[1, 5, 9, 33, 2, 60], [7, 7, 8, 0, 63, 12]]


@pytest.fixture(scope="module")
def tiny_art(tmp_path_factory):
    from conftest import need_fixture
    ckpt = need_fixture("neuronspark-tiny", "checkpoint")
    from ns_compile.cli.compile_cmd import compile_checkpoint
    d = tmp_path_factory.mktemp("tiny")
    compile_checkpoint(ckpt, d / "tiny8.nsc", weight_bits=8)
    (d / "ids.json").write_text(json.dumps(IDS))
    return ckpt, d / "tiny8.nsc", d / "ids.json"


@pytest.fixture(scope="module")
def random_art(tmp_path_factory):
    from ns_compile.cli.compile_cmd import compile_checkpoint
    d = tmp_path_factory.mktemp("rnd")
    ckpt = make_random_checkpoint(d / "ckpt", seed=3)
    compile_checkpoint(ckpt, d / "rnd.nsc", weight_bits=8)
    (d / "ids.json").write_text(json.dumps(RIDS))
    return ckpt, d / "rnd.nsc", d / "ids.json"


def _json(capsys, *args):
    code, out, err = run_cli(capsys, "compare", *args, "--json")
    return code, (json.loads(out) if out.strip().startswith("{") else None), err


def _pair(doc, a, b):
    return next(p for p in doc["pairs"] if p["a"] == a and p["b"] == b)


@pytest.mark.parametrize("which", ["tiny_art", "random_art"])
def test_reference_vs_emulator_reports_real_numbers(which, request, capsys):
    ckpt, art, ids = request.getfixturevalue(which)
    code, doc, err = _json(capsys, art, "--reference", ckpt, "--stages", "emulator", "--input-ids", ids)
    assert code == 0, err
    p = _pair(doc, "reference", "emulator")
    assert p["bit_exact"] is False and p["integer"] is False
    assert 0 < p["kl"] < 0.5 and 0.5 <= p["top1_agreement"] <= 1.0
    assert p["first_divergence"] is not None
    rows = {r["population"]: r for r in p["layers"]}
    for key in ("layers.0.block.input", "layers.0.block.hidden", "layers.1.ffn.gate", "decode.output"):
        r = rows[key]
        assert 0 < r["rms_err"] <= r["max_err"] and r["rel_rms_err"] < 0.5, (key, r)
        assert 0.8 < r["spike_agreement"] < 1.0 or r["spike_agreement"] == 1.0
    # quantization error at 8 bits is small relative to the signal, but not zero
    assert 1e-4 < np.median([r["rel_rms_err"] for r in p["layers"]]) < 0.3


@pytest.mark.lava
@pytest.mark.parametrize("which", ["tiny_art", "random_art"])
def test_emulator_vs_lava_fixed_is_bit_exact(which, request, capsys, tmp_path):
    need_lava()
    ckpt, art, ids = request.getfixturevalue(which)
    code, doc, err = _json(capsys, art, "--reference", ckpt, "--stages", "emulator,lava-sim-fixed",
                           "--input-ids", ids, "--require-bit-exact", "--max-new-tokens", "2")
    assert code == 0, err
    p = _pair(doc, "emulator", "lava-sim-fixed")
    assert p["bit_exact"] is True and p["first_divergence"] is None
    assert p["kl"] == 0.0 and p["top1_agreement"] == 1.0 and p["greedy"]["agreement"] == 1.0
    assert all(r["integer_compared"] and r["int_mismatches"] == 0 for r in p["layers"])
    # and the reference pairs carry real numbers
    assert _pair(doc, "reference", "lava-sim-fixed")["kl"] > 0


def _payload(v_int, f_v, f_p, bits):
    """docs/fixed_point.md §3.1: sat_P(shift(V, f_V → f_P)), written out here independently."""
    d = f_p - f_v
    x = v_int.astype(np.int64) << d if d >= 0 else v_int.astype(np.int64) >> (-d)
    m = (1 << (bits - 1)) - 1
    return np.clip(x, -m, m)


def test_one_weight_step_is_caught(tiny_art, capsys, tmp_path):
    """Change ONE mantissa of layer 1's gate_proj by one step: the report must name layers.1.ffn.gate
    and the first frame where the step shows, and layer 0 must stay bit-exact."""
    from ns_compile.artifact import load_artifact, write_artifact

    ckpt, art, ids = tiny_art
    gold = tmp_path / "gold.trace"
    code, _, err = run_cli(capsys, "trace", art, "--stage", "emulator", "--input-ids", ids, "-o", gold)
    assert code == 0, err
    from ns_compile.verify.trace import Trace
    t = Trace.load(gold)
    g, manifest = load_artifact(art)
    syn = g.synapses["L1.ffn.gate_proj"]
    src = g.populations[syn.src]
    e = t.entries["layers.1.ffn.input"]
    S = _payload(e.arrays["v_int"], src.fmt["V"], src.fmt["P"], src.fmt.get("payload_bits", 16))  # [B,T,K,D]
    # the input column whose payload is largest at the earliest frame it is nonzero
    nz = (S != 0).reshape(-1, S.shape[-1])              # frames in (row, token, frame) order, row 0 first
    j = int(np.argmax(np.abs(S[0, 0, 0]))) if np.abs(S[0, 0, 0]).max() > 0 else int(np.argmax(nz.any(0)))
    i = 5
    M = np.array(syn.weight, copy=True)
    step = 1 if M[i, j] < (1 << (syn.fmt["bits"] - 1)) - 1 else -1
    M[i, j] += step
    syn.weight = M
    mod = tmp_path / "mod.nsc"
    write_artifact(mod, g, source=manifest.get("source"), options=manifest.get("options"))
    code, doc, err = _json(capsys, mod, "--reference-trace", gold, "--stages", "emulator")
    assert code == 0, err
    p = doc["pairs"][0]
    assert (p["a"], p["b"]) == ("emulator (trace)", "emulator") and p["integer"] is True
    assert p["bit_exact"] is False
    fd = p["first_divergence"]
    assert fd["layer"] == "layers.1.ffn.gate" and fd["layer_index"] == 1
    # bounds from the contract (§2): ΔA = shift(step·S_j·2^(9−b), f_W+f_S+9−b → f_A) exactly when the
    # accumulator's rounding cannot hide it, i.e. |S_j|·2^(9−b) ≥ 2^d; nothing can change while S_j = 0
    f = syn.fmt
    dshift = f["f_W"] + f["f_S"] + 9 - f["bits"] - f["f_A"]
    # §2.1: the receiving neuron floor-shifts row i by its RS entry too
    dshift += int(np.asarray(g.populations[syn.dst].params.get("RS_" + syn.dst_port, np.zeros(i + 1)))[i])
    col = S[fd["row"], :, :, j].reshape(-1)
    first_nonzero = int(np.argmax(col != 0))
    sure = np.abs(col).astype(np.int64) * (1 << (9 - f["bits"])) >= (1 << max(dshift, 0))
    first_sure = int(np.argmax(sure)) if sure.any() else len(col)
    assert first_nonzero <= fd["global_frame"] <= first_sure
    rows = {r["population"]: r for r in p["layers"]}
    for key, r in rows.items():
        if key.startswith("layers.0.") or key in ("layers.1.block.input", "layers.1.block.hidden",
                                                   "layers.1.block.readout", "layers.1.ffn.input"):
            assert r["int_mismatches"] == 0, key
    assert rows["layers.1.ffn.gate"]["int_mismatches"] > 0
    # the terminal table names it too, and --require-bit-exact fails with exit 1
    code, out, err = run_cli(capsys, "compare", mod, "--reference-trace", gold, "--stages", "emulator",
                             "--require-bit-exact")
    assert code == 1 and "layers.1.ffn.gate" in err and "first divergence: layers.1.ffn.gate" in out


def test_reference_trace_equals_reference(tiny_art, capsys, tmp_path):
    ckpt, art, ids = tiny_art
    tr = tmp_path / "ref.trace"
    code, _, err = run_cli(capsys, "trace", ckpt, "--stage", "reference", "--input-ids", ids, "-o", tr,
                           "--max-new-tokens", "2")
    assert code == 0, err
    c1, d1, e1 = _json(capsys, art, "--reference", ckpt, "--stages", "emulator", "--input-ids", ids,
                       "--max-new-tokens", "2")
    c2, d2, e2 = _json(capsys, art, "--reference-trace", tr, "--stages", "emulator", "--input-ids", ids,
                       "--max-new-tokens", "2")
    assert c1 == c2 == 0, (e1, e2)
    assert d1["pairs"] == d2["pairs"]
    # the trace's ids are enough; different ids are refused (exit 2)
    c3, d3, _ = _json(capsys, art, "--reference-trace", tr, "--stages", "emulator")
    assert c3 == 0 and d3["pairs"][0]["kl"] == d1["pairs"][0]["kl"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps([[1, 2, 3]]))
    code, out, err = run_cli(capsys, "compare", art, "--reference-trace", tr, "--input-ids", other)
    assert code == 2 and "different input ids" in err


def test_tolerance_and_bad_input_exit_codes(tiny_art, capsys, tmp_path):
    ckpt, art, ids = tiny_art
    code, doc, err = _json(capsys, art, "--reference", ckpt, "--input-ids", ids, "--max-kl", "1e-12")
    assert code == 1 and doc["tolerance_failures"] and "tolerance exceeded" in err
    code, doc, err = _json(capsys, art, "--reference", ckpt, "--input-ids", ids, "--max-kl", "10",
                           "--max-top1-drop", "1")
    assert code == 0
    for args, msg in [(("--stages", "bogus"), "unknown stage"),
                      (("--stages", "loihi2"), "lava-loihi"),
                      (("--require-bit-exact",), "two integer stages"),
                      (("--input-ids", tmp_path / "missing.json"), "no such file")]:
        a = list(args)
        if "--input-ids" not in a:
            a += ["--input-ids", ids]
        code, out, err = run_cli(capsys, "compare", art, "--reference", ckpt, *a)
        assert code == 2 and msg in err, (args, err)
    code, out, err = run_cli(capsys, "trace", ckpt, "--stage", "emulator", "--input-ids", ids, "-o", tmp_path / "x")
    assert code == 2 and "artifact" in err and not (tmp_path / "x").exists()


def test_report_from_cli(tiny_art, capsys, tmp_path):
    from test_compare_report import assert_self_contained

    ckpt, art, ids = tiny_art
    code, out, err = run_cli(capsys, "compare", art, "--reference", ckpt, "--input-ids", ids, "--report",
                             tmp_path / "rep", "--population", "layers.1.ffn.gate")
    assert code == 0, err
    index = tmp_path / "rep" / "index.html"
    refs = assert_self_contained(index)
    assert {"membrane.png", "raster.png", "pair0_errors.png"} <= set(refs.refs)
    assert "layers.1.ffn.gate" in index.read_text()


def test_bits_sweep_in_report(random_art, capsys, tmp_path):
    from test_compare_report import assert_self_contained

    ckpt, art, ids = random_art
    code, doc, err = _json(capsys, art, "--reference", ckpt, "--input-ids", ids, "--report", tmp_path / "rep",
                           "--bits-sweep", "8,3")
    assert code == 0, err
    sweep = {x["bits"]: x for x in doc["bits_sweep"]}
    assert set(sweep) == {8, 3}
    assert sweep[3]["kl"] > sweep[8]["kl"] > 0          # fewer bits, larger error
    assert "bits.png" in assert_self_contained(tmp_path / "rep" / "index.html").refs
    code, out, err = run_cli(capsys, "compare", art, "--reference", ckpt, "--input-ids", ids, "--report",
                             tmp_path / "rep2", "--bits-sweep", "9")
    assert code == 2 and "[2, 8]" in err
