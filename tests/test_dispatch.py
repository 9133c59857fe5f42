"""load_model picks the family from what is on disk; config-only directories of both families plan."""
import json

from ns_compile.cli import main as cli_main
import pytest


def _inspect_json(path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["inspect", str(path), "--json"])
    assert e.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_nord_config_only_dir_goes_to_nord(tmp_path, capsys):
    # the published v3 144M sizes (nord.md §1.1); count from nord.md §1.1: 144,334,525
    cfg = {"model_family": "nord", "vocab_size": 128256, "d_model": 512, "n_heads": 8, "n_layers": 6,
           "d_ff": 1024, "n_clusters": 64, "T": 8, "T_slow": 2}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = _inspect_json(tmp_path, capsys)
    assert out["family"] == "nord"
    assert out["parameters"]["total"] == 144_334_525


def test_neuronspark_config_only_dir_goes_to_neuronspark(tmp_path, capsys):
    cfg = {"model_type": "neuronspark", "vocab_size": 6144, "D": 896, "N": 8, "K": 16, "num_layers": 20,
           "D_ff": 2688, "v_th_min": 0.1}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = _inspect_json(tmp_path, capsys)
    assert out["parameters"]["total"] == 874_142_120


def test_unknown_model_type_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(SystemExit) as e:
        cli_main(["inspect", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "llama" in err
