"""`inspect` from shapes alone; expected figures are the hand-derived ones of spec §3.9, §7.4, §8."""
from __future__ import annotations

import json

from _ns_helpers import NS_0P9B, copy_checkpoint, run_cli


def _config_only(tmp_path, **cfg):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_inspect_0p9b_config_only_json(tmp_path, capsys):
    d = _config_only(tmp_path, **NS_0P9B)
    code, out, err = run_cli(capsys, "inspect", d, "--json")
    assert code == 0, err
    info = json.loads(out)
    p = info["parameters"]
    assert p["total"] == 874_142_120
    assert p["tensors"] == 607
    assert p["bytes_fp32"] == 3_496_568_480
    assert p["per_layer"] == {"snn_block": 33_739_776, "snn_ffn": 8_038_912, "out_proj": 1_605_632,
                              "other": 7_170, "total": 43_391_490}
    assert p["top_level"]["total"] == 6_312_320
    assert p["top_level"]["embedding"] == 5_505_024
    assert p["top_level"]["decode_proj"] == 802_816 + 896
    assert p["by_group"] == {"snn_block": 674_795_520, "snn_ffn": 160_778_240, "out_proj": 32_112_640,
                             "embedding": 5_505_024, "other": 950_696}
    assert info["state"]["floats_per_sequence"] == 287_616
    assert info["state"]["per_layer"]["total"] == 14_336
    assert info["neurons"]["total"] == 287_616
    assert info["synapses"]["macs_per_frame_per_layer"] == 41_748_224
    assert round(info["synapses"]["macs_per_token"] / 1e9, 2) == 13.40
    assert info["weights"].startswith("absent")
    places = {o["placement"] for o in info["ops"]}
    assert places == {"neuromorphic", "host"}
    host = " ".join(o["op"] for o in info["ops"] if o["placement"] == "host")
    for word in ("embedding", "RMSNorm", "PonderNet", "LM head", "sampling"):
        assert word in host


def test_inspect_human_table(tmp_path, capsys):
    d = _config_only(tmp_path, **NS_0P9B)
    code, out, err = run_cli(capsys, "inspect", d)
    assert code == 0, err
    assert "874,142,120" in out and "287,616" in out and "33,739,776" in out
    assert "neuromorphic:" in out and "host:" in out


def test_inspect_fixture_reports_weights(ns_tiny, tmp_path, capsys):
    code, out, err = run_cli(capsys, "inspect", ns_tiny, "--json")
    assert code == 0, err
    info = json.loads(out)
    # D=64, N=8, D_ff=192, L=2, V=6144: 2*(5*64²*8 + 2*64² + 3*64*8 + 3*64*192 + 64² + 4*192 + 2*64² + 8*64 + 2)
    #                                    + 6144*64 + 64² + 5*64
    assert info["parameters"]["total"] == 845_636
    assert info["parameters"]["tensors"] == 67
    assert info["weight_dtypes"] == {"F32": 845_636}


def test_inspect_never_reads_weight_data(ns_tiny, tmp_path, capsys):
    # NaN weights do not bother inspect (it reads the header only) but do stop `logits`
    from _ns_helpers import load_tensors, write_tensors
    d = copy_checkpoint(ns_tiny, tmp_path / "ck")
    t = load_tensors(d)
    t["model.norm.gain"][0] = float("nan")
    write_tensors(d, t)
    code, out, err = run_cli(capsys, "inspect", d)
    assert code == 0 and "845,636" in out, err
