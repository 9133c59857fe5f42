"""`compare ART` without --reference finds the checkpoint recorded (relatively) in the manifest."""
import json
import shutil

import pytest

from ns_compile.cli import main as cli_main


def test_compare_finds_reference_through_manifest(ns_tiny, ns_tiny_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ns_tiny, ckpt)
    art = tmp_path / "out" / "tiny.nsc"
    with pytest.raises(SystemExit) as e:
        cli_main(["compile", str(ckpt), "-o", str(art)])
    assert e.value.code == 0
    capsys.readouterr()
    # moving the pair of folders together keeps the relative path valid
    moved = tmp_path / "moved"
    (tmp_path / "out").rename(tmp_path / "moved_out")
    ckpt.rename(tmp_path / "moved_ckpt")
    moved.mkdir()
    shutil.move(str(tmp_path / "moved_out"), moved / "out")
    shutil.move(str(tmp_path / "moved_ckpt"), moved / "ckpt")
    with pytest.raises(SystemExit) as e:
        cli_main(["compare", str(moved / "out" / "tiny.nsc"), "--stages", "reference,emulator",
                  "--input-ids", str(ns_tiny_dir / "input_ids.json"), "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    pair = out["pairs"][0]
    assert {pair["a"], pair["b"]} == {"reference", "emulator"}
    assert 0.5 < pair["top1_agreement"] <= 1.0 and pair["kl"] > 0
