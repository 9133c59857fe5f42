"""Trace file: round trip, atomic writes, bad files, canonical keys (synthetic data)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ns_compile.errors import UserError
from ns_compile.verify.keys import canonical_key, parse_key, sort_keys
from ns_compile.verify.trace import META_KEY, TRACE_FORMAT, Trace

from _verify_helpers import make_integer_trace


def test_roundtrip_keeps_arrays_dtypes_and_metadata(tmp_path):
    t = make_integer_trace()
    t.meta["greedy"] = {"tokens": [1, 2, 3]}
    p = t.save(tmp_path / "a.trace")
    u = Trace.load(p)
    assert u.meta == json.loads(json.dumps(t.meta))
    assert u.stage == "emulator" and u.integer and u.frames == 4
    np.testing.assert_array_equal(u.input_ids, t.input_ids)
    np.testing.assert_array_equal(u.logits, t.logits)
    assert set(u.entries) == set(t.entries)
    for k, e in t.entries.items():
        f = u.entries[k]
        assert f.kind == e.kind and f.fmt == e.fmt and f.saturation == e.saturation
        for n, a in e.arrays.items():
            assert f.arrays[n].dtype == a.dtype
            np.testing.assert_array_equal(f.arrays[n], a)
    assert u.entries["layers.0.block.input"].arrays["spikes"].dtype == np.uint8
    assert u.entries["layers.0.block.input"].arrays["v_int"].dtype == np.int32


def test_file_is_plain_safetensors_with_json_header(tmp_path):
    from safetensors import safe_open

    p = make_integer_trace().save(tmp_path / "a.trace")
    with safe_open(str(p), framework="numpy") as f:
        header = json.loads(f.metadata()[META_KEY])
        assert header["format"] == TRACE_FORMAT
        assert "layers.0.block.hidden/v_int" in f.keys()
        assert header["entries"]["layers.0.block.input"]["kind"] == "plif_static"


def test_wide_integers_are_kept_exactly(tmp_path):
    t = Trace({"stage": "emulator"})
    big = np.array([[[[2 ** 40, -(2 ** 40)]]]], dtype=np.int64)
    t.add("layers.0.ffn.product", "product", out_int=big, out=big.astype(np.float64))
    u = Trace.load(t.save(tmp_path / "w.trace"))
    np.testing.assert_array_equal(u.entries["layers.0.ffn.product"].arrays["out_int"], big)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.numpy as stn

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(stn, "save_file", boom)
    with pytest.raises(RuntimeError):
        make_integer_trace().save(tmp_path / "a.trace")
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such trace"):
        Trace.load(tmp_path / "missing.trace")
    junk = tmp_path / "junk.trace"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="cannot read trace"):
        Trace.load(junk)
    from safetensors.numpy import save_file
    other = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(UserError, match="not an ns-compile trace"):
        Trace.load(other)


def test_select_filters_by_glob():
    t = make_integer_trace().select(["layers.0.*"])
    assert sorted(t.entries) == ["layers.0.block.hidden", "layers.0.block.input", "layers.0.block.readout",
                                 "layers.0.ffn.gate"]


@pytest.mark.parametrize("name,kind,key", [
    ("L0.block.in", "plif_static", "layers.0.block.input"),
    ("L3.block.hid", "plif_selective", "layers.3.block.hidden"),
    ("L3.block.out", "gated_readout", "layers.3.block.readout"),
    ("L1.ffn.in", "plif_static", "layers.1.ffn.input"),
    ("L1.ffn.gate", "plif_static", "layers.1.ffn.gate"),
    ("L1.ffn.up", "plif_static", "layers.1.ffn.up"),
    ("L1.ffn.prod", "product", "layers.1.ffn.product"),
    ("L12.ffn.out", "accumulate", "layers.12.ffn.readout"),
    ("decode.out", "plif_static", "decode.output"),
    ("layers.2.ffn.up", "plif_static", "layers.2.ffn.up"),
])
def test_ir_names_map_to_canonical_keys(name, kind, key):
    assert canonical_key(SimpleNamespace(name=name, kind=kind, stage="", meta={})) == key


def test_trace_key_in_meta_wins_and_order_is_execution_order():
    assert canonical_key(SimpleNamespace(name="x", kind="plif_static", stage="", meta={"trace_key": "decode.output"})) \
        == "decode.output"
    keys = ["decode.output", "layers.1.block.input", "layers.0.ffn.gate", "layers.0.block.residual",
            "layers.0.block.hidden", "layers.10.block.input", "layers.2.ffn.readout"]
    assert sort_keys(keys) == ["layers.0.block.hidden", "layers.0.block.residual", "layers.0.ffn.gate",
                               "layers.1.block.input", "layers.2.ffn.readout", "layers.10.block.input",
                               "decode.output"]
    k = parse_key("layers.4.ffn.product")
    assert (k.layer, k.sublayer, k.name, k.stage) == (4, "ffn", "product", "layers.4.ffn")


def test_verify_imports_no_lava():
    """The trace/compare code must run on GPU machines without Lava (Python 3.11/3.12)."""
    import subprocess
    import sys
    code = ("import sys, ns_compile.verify, ns_compile.verify.stages, ns_compile.verify.report, "
            "ns_compile.verify.compare, ns_compile.verify.sweep, ns_compile.verify.emulator_trace, "
            "ns_compile.cli.trace_cmd, ns_compile.cli.compare_cmd; "
            "bad = [m for m in sys.modules if m == 'lava' or m.startswith('lava.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
