"""`ns-compile demo` end to end on the shipped NeuronSpark demo model (few tokens), plus its errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_compare_report import assert_self_contained

REPO = Path(__file__).resolve().parents[1]


def _cli(args, cwd, env=None, timeout=600):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ns_compile", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.mark.slow
@pytest.mark.lava
def test_demo_neuronspark(tmp_path):
    pytest.importorskip("lava.magma")
    r = _cli(["demo", "--max-new-tokens", "3", "--eval-tokens", "24", "--report", "rep"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out, err = r.stdout, r.stderr
    # stage lines on stderr (no terminal: no bars)
    assert "[1/7] compiling neuronspark-demo for kapoho-point" in err and "[7/7] writing the HTML report" in err
    # side by side: both column heads on one line, the prompt in both columns
    head = next(ln for ln in out.splitlines() if "fp32 reference (PyTorch)" in ln)
    assert "|" in head and "Loihi 2 fixed point (Lava sim, fused)" in head
    both = [ln for ln in out.splitlines() if ln.count("The os module provides") == 2 and "|" in ln]
    assert both, out
    # Lava == emulator, explicitly, tokens and states
    assert "Lava vs emulator: identical -- 3/3 generated tokens equal" in out
    assert "integer emulator:" in out and "Lava (fixed pt):" in out
    emu = next(ln for ln in out.splitlines() if ln.strip().startswith("integer emulator:")).split(":", 1)[1]
    lava = next(ln for ln in out.splitlines() if ln.strip().startswith("Lava (fixed pt):")).split(":", 1)[1]
    assert emu.strip() == lava.strip()
    # fidelity table
    assert "Fidelity" in out and "top-1 agree" in out and "KL (nats)" in out
    row = next(ln for ln in out.splitlines() if "quantized (emulator) vs fp32, held-out" in ln)
    assert " 24 " in row and "%" in row
    run_row = next(ln for ln in out.splitlines() if "Lava fixed vs emulator, the run" in ln)
    assert run_row.rstrip().endswith("yes") and "100.0%" in run_row
    # resources and energy, with sources
    assert "Resources and energy on kapoho-point (8 chips x 128 cores)" in out
    assert "chips used 1" in out and "energy/token:" in out and "latency/token:" in out
    assert "Davies et al. 2018" in out
    # report folder
    rep = tmp_path / "rep"
    assert f"Report: rep{os.sep}index.html" in out
    p = assert_self_contained(rep / "index.html")
    assert "partition/core_utilization_metis.png" in p.refs
    assert (rep / "partition" / "plan.json").is_file() and (rep / "neuronspark-demo.nsa").is_file()
    html = (rep / "index.html").read_text()
    assert "identical" in html and "Resources and energy on kapoho-point" in html
    # nothing left over next to the report (the staging folder is removed)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["rep"]
    # the artifact in the report runs, and finds its checkpoint through the manifest's relative path
    from ns_compile.verify.stages import manifest_checkpoint, open_artifact
    assert manifest_checkpoint(open_artifact(rep / "neuronspark-demo.nsa")).resolve() == \
        (REPO / "examples" / "neuronspark-demo").resolve()


def test_demo_missing_examples(tmp_path):
    r = _cli(["demo", "--report", "rep"], cwd=tmp_path, env={"NS_COMPILE_EXAMPLES": str(tmp_path / "nothing")})
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "NS_COMPILE_EXAMPLES" in r.stderr and len(r.stderr.splitlines()) == 1
    (tmp_path / "ex").mkdir()
    r = _cli(["demo", "--report", "rep"], cwd=tmp_path, env={"NS_COMPILE_EXAMPLES": str(tmp_path / "ex")})
    assert r.returncode == 2 and "the neuronspark demo model is missing" in r.stderr
    assert not (tmp_path / "rep").exists()


def test_demo_bad_hardware(tmp_path):
    r = _cli(["demo", "--hardware", "no-such-profile", "--report", "rep"], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    assert sorted(x.name for x in tmp_path.iterdir()) == []


def test_demo_side_by_side_and_locator():
    from ns_compile.cli.demo_cmd import demo_paths, examples_dir, side_by_side
    assert examples_dir().resolve() == (REPO / "examples").resolve()
    ck, held = demo_paths("neuronspark")
    assert (ck / "config.json").is_file() and held.name == "heldout.txt"
    rows = side_by_side(("a", "one\ntwo"), ("b", "x " * 30), width=10)
    assert rows[0].startswith("  a") and "| b" in rows[0]
    assert all(len(r.split("|")[0]) == 2 + 10 + 1 for r in rows[2:])
    assert json.dumps(rows)
