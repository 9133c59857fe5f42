"""Nord v3 fixture end to end: compile (with partition), Lava fixed point bit-exact against the
emulator in both granularities (states of every frame + greedy tokens), float Lava == float IR,
`run --backend lava-sim`, `plan` on the artifact with measured spike rates, and `compare`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import need_fixture, need_lava


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ns_compile", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    d = need_fixture("nord", "v3")
    inp = json.loads((d / "inputs.json").read_text())
    tmp = tmp_path_factory.mktemp("nord")
    (tmp / "calib.json").write_text(json.dumps(inp["inputs"]["main"]))
    (tmp / "prompt.json").write_text(json.dumps(inp["inputs"]["prompt"]))
    (tmp / "ids.json").write_text(json.dumps([inp["inputs"]["main"][0][:6]]))
    out = tmp / "nord.nsa"
    r = cli("compile", d / "nord_final.pt", "-o", out, "--calibration", tmp / "calib.json", "--hardware", "loihi2-chip")
    assert r.returncode == 0, r.stderr
    from ns_compile.artifact import FIXED_POINT_VERSION
    assert "lif_nord" in r.stdout and "spike rates" in r.stdout and f"fixed-point v{FIXED_POINT_VERSION}" in r.stdout
    return d, tmp, out, inp


def test_artifact_records_activity_and_partition(art):
    from ns_compile.artifact import Artifact
    _d, _tmp, out, _ = art
    a = Artifact(out)
    g = a.graph()
    act = g.meta["activity"]
    assert set(act) == set(g.populations) and all(0.0 < v < 0.5 for v in act.values())
    rep = a.json("calibration_report.json")
    assert rep["sparsity"]["readout_lif"]["sparsity"] == pytest.approx(1 - act["readout_lif"])
    part = a.json("partition.json")
    assert part["assumptions"][0].startswith("activity: measured")
    assert {p["population"]: p["activity"] for p in part["populations"]} == act


def test_plan_artifact_uses_measured_rates(art):
    d, _tmp, out, _ = art
    r1 = cli("plan", out, "--hardware", "loihi2-chip", "--json")
    r2 = cli("plan", d / "nord_final.pt", "--hardware", "loihi2-chip", "--json")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    m, s = json.loads(r1.stdout), json.loads(r2.stdout)
    assert "measured" in m["assumptions"][0] and "measured" not in s["assumptions"][0]
    assert {p["activity"] for p in s["populations"]} == {0.1}
    assert m["populations"][0]["activity"] != 0.1
    assert m["energy_j_per_token"] != s["energy_j_per_token"]


@pytest.mark.parametrize("granularity", ["fused", "population"])
def test_lava_fixed_bit_exact_vs_emulator(art, granularity):
    need_lava()
    from ns_compile.artifact import load_artifact
    from ns_compile.backends.lava import run_artifact
    from ns_compile.sim import Emulator
    _d, _tmp, out, inp = art
    g, _ = load_artifact(out)
    prompt = inp["inputs"]["prompt"][:4]
    emu = Emulator(g)
    new = emu.generate(prompt, 3)
    tr = {}
    lg = emu.forward(torch.tensor([prompt + new[:-1]]), trace=tr)
    res = run_artifact(g, prompt, mode="fixed", granularity=granularity, max_new_tokens=3, trace=True, timeout_s=400)
    print(f"Lava {granularity} fixed: {res['ms_per_token']:.0f} ms/token, {res['steps_per_token']} steps/token")
    assert res["ids"] == new
    assert np.array_equal(res["logits"], lg[0].numpy())
    checked = 0
    for n, tok in enumerate(res["trace"]):
        for st, pops in tok.items():
            for p, f in pops.items():
                assert np.array_equal(f["V"], tr[st][p]["V"][:, 0, n].numpy()), (n, st, p)
                assert np.array_equal(f["P"], tr[st][p]["P"][:, 0, n].numpy()), (n, st, p)
                checked += 1
    assert checked == len(res["trace"]) * len(g.populations)


def test_lava_float_matches_float_ir_and_run_cli(art):
    need_lava()
    from ns_compile.artifact import load_artifact
    from ns_compile.backends.lava import run_artifact
    from ns_compile.sim import Emulator
    _d, tmp, out, inp = art
    fg, _ = load_artifact(out, float_graph=True)
    prompt = inp["inputs"]["prompt"][:3]
    new, steps = Emulator(fg).generate(prompt, 2, return_logits=True)
    res = run_artifact(fg, prompt, mode="float", granularity="fused", max_new_tokens=2, return_info=True,
                       timeout_s=300)
    assert res["ids"] == new
    assert np.abs(res["logits"][len(prompt) - 1:] - steps.numpy()).max() < 1e-4
    r = cli("run", out, "--backend", "lava-sim", "--prompt-ids", tmp / "prompt.json", "--max-new-tokens", "3", "--json")
    r2 = cli("run", out, "--prompt-ids", tmp / "prompt.json", "--max-new-tokens", "3", "--json")
    assert r.returncode == 0 and r2.returncode == 0, r.stderr + r2.stderr
    assert json.loads(r.stdout)["ids"] == json.loads(r2.stdout)["ids"]


def test_compare_cli(art):
    need_lava()
    d, tmp, out, _ = art
    r = cli("compare", out, "--reference", d / "nord_final.pt", "--stages", "emulator,lava-sim-fixed",
            "--input-ids", tmp / "ids.json", "--json", "--require-bit-exact")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["pairs"]
    by = {(x["a"], x["b"]): x for x in res}
    ee = by[("emulator", "lava-sim-fixed")]
    assert ee["bit_exact"] and ee["top1_agreement"] == 1.0
    re_ = by[("reference", "emulator")]
    assert not re_["bit_exact"] and 0.0 < re_["top1_agreement"] <= 1.0 and re_["kl"] > 0
    rows = {x["population"]: x for x in re_["layers"]}
    assert rows["input_lif"]["spike_agreement"] > 0.99
    assert all(0.8 < rows[p]["spike_agreement"] <= 1.0 for p in rows if "spike_agreement" in rows[p])
