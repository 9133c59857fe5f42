"""`compile` / `run` and the artifact: determinism, atomicity, bad inputs, a second model of our own."""
from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import torch

from ns_compile.errors import UserError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args):
    from click.testing import CliRunner

    from ns_compile.cli import cli as group
    r = CliRunner().invoke(group, [str(a) for a in args], standalone_mode=False, catch_exceptions=True)
    return r


def make_random_checkpoint(path, *, D=32, N=4, K=8, L=2, D_ff=48, V=96, seed=0, tokenizer_from=None):
    """A random NeuronSpark-V1 checkpoint in the HF layout (spec §8 init statistics, roughly)."""
    from safetensors.numpy import save_file

    from ns_compile.models.neuronspark.config import NSConfig
    from ns_compile.models.neuronspark.shapes import HF_PREFIX, shape_table
    cfg = NSConfig(vocab_size=V, D=D, N=N, K=K, num_layers=L, D_ff=D_ff)
    rng = np.random.default_rng(seed)
    t = {}
    for k, shape in shape_table(cfg).items():
        if k.endswith("v_th"):
            x = rng.uniform(0.1, 0.5, shape)
        elif k.endswith(".w"):
            x = rng.normal(0, 0.5, shape)
        elif k.endswith("b_beta"):
            x = rng.normal(2.0, 0.5, shape)
        elif k.endswith("b_alpha"):
            x = rng.normal(0.54, 0.1, shape)
        elif k.endswith("b_th"):
            x = rng.normal(0.1, 0.02, shape)
        elif k.endswith("halt.bias"):
            x = np.full(shape, -3.5)
        elif k.endswith("norm.weight") or k.endswith("gain"):
            x = np.ones(shape)
        elif len(shape) == 2:
            x = rng.uniform(-1, 1, shape) / math.sqrt(shape[1])
            if "embed" in k:
                x = rng.normal(0, 0.5, shape)
        else:
            x = rng.normal(0, 0.02, shape)
        t[HF_PREFIX + k] = np.ascontiguousarray(x, dtype=np.float32)
    path.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "neuronspark", "vocab_size": V, "D": D, "N": N,
                                                  "K": K, "num_layers": L, "D_ff": D_ff, "v_th_min": 0.1}))
    return path


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    from conftest import need_fixture
    ck = need_fixture("neuronspark-tiny", "checkpoint")
    out = tmp_path_factory.mktemp("art") / "tiny.nsa"
    r = cli("compile", ck, "-o", out)
    assert r.exit_code == 0, r.output
    return ck, out, r.output


def test_compile_prints_report_and_microcode(tiny_artifact):
    _, out, text = tiny_artifact
    assert "8-bit weights" in text and "L0" in text
    for kind, sec in (("plif_static", "§3.1"), ("plif_selective", "§3.2"), ("gated_readout", "§3.3")):
        assert kind in text and sec in text
    assert "product " not in text                  # stock ProdNeuron: no custom microcode
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert names[0] == "manifest.json"
        assert {"graph.json", "tensors.safetensors", "calibration_report.json", "graph.onnx"} <= set(names)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        m = json.loads(z.read("manifest.json"))
    from ns_compile.artifact import FIXED_POINT_VERSION
    assert m["format_version"] == 1 and m["fixed_point_version"] == FIXED_POINT_VERSION == 5
    assert m["source"]["sha256"] == "a0c19129556011ef750a47b8eb2daa8da7a468098732eca018a6c345e6a0e51c" or \
        len(m["source"]["sha256"]) == 64
    assert m["options"]["weight_bits"] == 8
    assert m["options"]["per_channel"] is True                 # the default (docs/fixed_point.md §2.1)


def test_onnx_view(tiny_artifact):
    import onnx
    _, out, _ = tiny_artifact
    with zipfile.ZipFile(out) as z:
        model = onnx.load_from_string(z.read("graph.onnx"))
    doms = {n.domain for n in model.graph.node}
    assert doms == {"ns_compile"}
    kinds = {n.op_type for n in model.graph.node}
    assert {"plif_selective", "Dense", "ponder_residual", "lm_head"} <= kinds


def test_load_artifact_roundtrip(tiny_artifact):
    from ns_compile.artifact import load_artifact
    from ns_compile.sim import Emulator
    ck, out, _ = tiny_artifact
    g, m = load_artifact(out)
    assert g.quantized and m["family"] == "neuronspark"
    g.validate()
    fg, _ = load_artifact(out, float_graph=True)
    assert not fg.quantized
    ids = torch.tensor([[3, 87, 93, 87]])
    a = Emulator(g).forward(ids)
    assert a.shape == (1, 4, 6144)


def test_compile_is_deterministic(tiny_artifact, tmp_path):
    ck, out, _ = tiny_artifact
    r = cli("compile", ck, "-o", tmp_path / "again.nsa")
    assert r.exit_code == 0
    assert (tmp_path / "again.nsa").read_bytes() == out.read_bytes()


def test_run_emulator_cli(tiny_artifact, tmp_path):
    _, out, _ = tiny_artifact
    ids = tmp_path / "ids.json"
    ids.write_text("[3, 87, 93, 87, 88]")
    r = cli("run", out, "--prompt-ids", ids, "--max-new-tokens", 3, "--json")
    assert r.exit_code == 0, r.output
    o = json.loads(r.output)
    assert len(o["ids"]) == 3 and isinstance(o["text"], str)
    r2 = cli("run", out, "--float", "--prompt", "hello", "--max-new-tokens", 2, "--json")
    assert r2.exit_code == 0, r2.output
    assert len(json.loads(r2.output)["ids"]) == 2


def test_atomic_failure_leaves_nothing(tiny_artifact, tmp_path):
    from ns_compile.artifact import load_artifact, write_artifact
    _, out, _ = tiny_artifact
    g, _ = load_artifact(out)
    dest = tmp_path / "x.nsa"
    with pytest.raises(RuntimeError):
        write_artifact(dest, g, _fail_after=2)
    assert list(tmp_path.iterdir()) == []


def _bad(path, tmp_path, mutate):
    data = bytearray(path.read_bytes())
    data = mutate(data)
    p = tmp_path / "bad.nsa"
    p.write_bytes(bytes(data))
    return p


def test_bad_artifacts(tiny_artifact, tmp_path):
    from ns_compile.artifact import load_artifact
    _, out, _ = tiny_artifact
    truncated = _bad(out, tmp_path, lambda d: d[: len(d) // 2])
    with pytest.raises(UserError):
        load_artifact(truncated)
    # flip a byte inside the tensors entry: CRC / checksum error
    with zipfile.ZipFile(out) as z:
        info = z.getinfo("tensors.safetensors")
    off = info.header_offset + 30 + len(info.filename) + 1000

    def flip(d):
        d[off] ^= 0xFF
        return d
    with pytest.raises(UserError, match="corrupt"):
        load_artifact(_bad(out, tmp_path, flip))
    # another format version
    other = tmp_path / "v99.nsa"
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(other, "w") as zout:
        for i in zin.infolist():
            b = zin.read(i.filename)
            if i.filename == "manifest.json":
                m = json.loads(b)
                m["format_version"] = 99
                b = json.dumps(m).encode()
            zout.writestr(i, b)
    with pytest.raises(UserError, match="format version"):
        load_artifact(other)
    r = cli("run", other, "--prompt", "x")
    assert isinstance(r.exception, UserError)
    nonzip = tmp_path / "plain.nsa"
    nonzip.write_text("hello")
    with pytest.raises(UserError):
        load_artifact(nonzip)


def test_main_exit_code_2(tmp_path):
    import subprocess
    import sys
    p = tmp_path / "no.nsa"
    p.write_text("junk")
    r = subprocess.run([sys.executable, "-m", "ns_compile", "run", str(p), "--prompt", "x"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


@pytest.mark.parametrize("bits", ["1", "9"])
def test_compile_bad_bits(tiny_artifact, tmp_path, bits):
    ck, _, _ = tiny_artifact
    r = cli("compile", ck, "-o", tmp_path / "b.nsa", "--weight-bits", bits)
    assert isinstance(r.exception, UserError) and not (tmp_path / "b.nsa").exists()


@pytest.mark.parametrize("content", [b"", b"   \n", b"\xff\xfe\x00bad"])
def test_compile_bad_calibration(tiny_artifact, tmp_path, content):
    ck, _, _ = tiny_artifact
    f = tmp_path / "cal.txt"
    f.write_bytes(content)
    r = cli("compile", ck, "-o", tmp_path / "c.nsa", "--calibration", f)
    assert isinstance(r.exception, UserError), r.output
    assert not (tmp_path / "c.nsa").exists()


def test_compile_hardware_without_partitioner_or_with(tiny_artifact, tmp_path):
    ck, _, _ = tiny_artifact
    r = cli("compile", ck, "-o", tmp_path / "h.nsa", "--hardware", "no-such-profile")
    assert isinstance(r.exception, UserError)          # unknown profile, or no partitioner
    assert not (tmp_path / "h.nsa").exists()


def test_second_model_of_our_own(tmp_path):
    """A random NeuronSpark config (D=32, N=4, K=8, 2 layers) in HF layout compiles and runs,
    at 8 and 3 bits, with a calibration text — no tokenizer, so random calibration ids."""
    ck = make_random_checkpoint(tmp_path / "mine")
    out = tmp_path / "mine.nsa"
    r = cli("compile", ck, "-o", out, "--weight-bits", 3)
    assert r.exit_code == 0, r.output
    ids = tmp_path / "p.json"
    ids.write_text("[[1, 2, 3, 4, 5]]")
    r = cli("run", out, "--prompt-ids", ids, "--max-new-tokens", 4, "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["ids"]) == 4
    # the float IR of our own model equals the reference implementation of the frontend
    from ns_compile.lower import lower_handle
    from ns_compile.models import load_model
    from ns_compile.sim import Emulator
    h = load_model(ck)
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    ref = h.logits(x)
    got = Emulator(lower_handle(h)).forward(x)
    assert (ref - got).abs().max() < 1e-4
    r = cli("run", out, "--prompt", "hi")               # no tokenizer stored: a clear error
    assert isinstance(r.exception, UserError)
