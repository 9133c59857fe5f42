"""Bad input: one line naming the file and the problem, exit code 2, and nothing written."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from _ns_helpers import copy_checkpoint, edit_config, files_in, load_tensors, run_cli, write_tensors


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ckpt(ns_tiny, tmp_path):
    return copy_checkpoint(ns_tiny, tmp_path / "ckpt")


@pytest.fixture
def ids_file(ns_tiny_dir):
    return ns_tiny_dir / "input_ids.json"


def expect_error(capsys, tmp_path, args, *fragments):
    """Run `logits ... --out` (or other args); check exit 2, the message, and that nothing was written."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    before = files_in(out_dir)
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (code, out, err)
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in err, err
    for f in fragments:
        assert f in line, (f, line)
    assert files_in(out_dir) == before, "an output was written despite the error"
    return line


def logits_args(ckpt, ids, tmp_path):
    return ["logits", ckpt, "--input-ids", ids, "--out", tmp_path / "out" / "logits.npy"]


def test_missing_weights_is_valid_for_inspect_but_not_logits(ns_tiny, tmp_path, capsys, ids_file):
    ckpt = copy_checkpoint(ns_tiny, tmp_path / "cfgonly", weights=False)
    code, out, err = run_cli(capsys, "inspect", ckpt)
    assert code == 0 and "845,636" in out, err
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), str(ckpt), "no weights")
    expect_error(capsys, tmp_path, ["generate", ckpt, "--prompt-ids", ids_file], "no weights")


def test_truncated_safetensors(ckpt, tmp_path, capsys, ids_file):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), str(f), "truncated or corrupt")
    f.write_bytes(b"\x00\x01garbage")
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), str(f), "not a valid safetensors")
    expect_error(capsys, tmp_path, ["inspect", ckpt], str(f))


def test_missing_key(ckpt, tmp_path, capsys, ids_file):
    t = load_tensors(ckpt)
    del t["model.layers.1.snn_block.W_out.weight"]
    write_tensors(ckpt, t)
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), "model.safetensors",
                 "missing 1 tensor", "model.layers.1.snn_block.W_out.weight")


def test_unexpected_key(ckpt, tmp_path, capsys, ids_file):
    t = load_tensors(ckpt)
    t["model.lm_head.weight"] = t["model.embed_tokens.weight"].clone()
    t["extra.bias"] = torch.zeros(3)
    write_tensors(ckpt, t)
    line = expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), "model.safetensors",
                        "unexpected 2 tensor", "model.lm_head.weight")
    assert "extra.bias" in line


def test_misshaped_key(ckpt, tmp_path, capsys, ids_file):
    t = load_tensors(ckpt)
    t["model.layers.0.snn_ffn.down_proj.weight"] = torch.zeros(64, 100)
    write_tensors(ckpt, t)
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), "model.safetensors", "wrong shape",
                 "model.layers.0.snn_ffn.down_proj.weight is [64, 100], expected [64, 192]")


@pytest.mark.parametrize("value,word", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_weight(ckpt, tmp_path, capsys, ids_file, value, word):
    t = load_tensors(ckpt)
    t["model.layers.1.snn_block.b_th"][7] = value
    write_tensors(ckpt, t)
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), "model.safetensors",
                 "model.layers.1.snn_block.b_th", word)
    expect_error(capsys, tmp_path, ["generate", ckpt, "--prompt-ids", ids_file.parent / "input_ids.json"],
                 "generate takes one prompt")


def test_unknown_model_type(ckpt, tmp_path, capsys, ids_file):
    edit_config(ckpt, model_type="llama")
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), str(ckpt / "config.json"),
                 "unsupported model_type 'llama'")
    edit_config(ckpt, model_type=None)
    expect_error(capsys, tmp_path, ["inspect", ckpt], str(ckpt / "config.json"), "no model_type")


def test_config_contradicts_weights(ckpt, tmp_path, capsys, ids_file):
    edit_config(ckpt, D=32)
    expect_error(capsys, tmp_path, logits_args(ckpt, ids_file, tmp_path), str(ckpt / "config.json"),
                 "D=32", "D=64", "model.embed_tokens.weight")
    edit_config(ckpt, D=64, num_layers=3)
    expect_error(capsys, tmp_path, ["inspect", ckpt], "num_layers=3", "2 layers")
    edit_config(ckpt, num_layers=2, D_ff=128)
    expect_error(capsys, tmp_path, ["inspect", ckpt], "D_ff=128", "D_ff=192")


def test_missing_size_in_config(ckpt, tmp_path, capsys):
    edit_config(ckpt, K=None)
    expect_error(capsys, tmp_path, ["inspect", ckpt], str(ckpt / "config.json"), "missing K")
    edit_config(ckpt, K=16, N="8")
    expect_error(capsys, tmp_path, ["inspect", ckpt], "N must be a positive integer")


@pytest.mark.parametrize("data,problem", [
    ([[1, 2, 3], [4, 5]], "ragged"),
    ([[1, 2.5, 3]], "row 0[1] = 2.5 is not an integer"),
    ([[1, True]], "is not an integer"),
    ([[1, 2, 6144]], "row 0[2] = 6144 is outside the vocabulary [0, 6144)"),
    ([[1, -1]], "outside the vocabulary"),
    ([1, 2, 3], "list of lists"),
    ([], "list of lists"),
    ([[]], "row 0 is empty"),
])
def test_bad_input_ids(ns_tiny, tmp_path, capsys, data, problem):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(data))
    expect_error(capsys, tmp_path, logits_args(ns_tiny, ids, tmp_path), str(ids), problem)


def test_bad_json_and_missing_files(ns_tiny, tmp_path, capsys):
    ids = tmp_path / "ids.json"
    ids.write_text("[[1, 2,")
    expect_error(capsys, tmp_path, logits_args(ns_tiny, ids, tmp_path), str(ids), "not valid JSON")
    expect_error(capsys, tmp_path, logits_args(ns_tiny, tmp_path / "nope.json", tmp_path), "nope.json",
                 "no such file")
    expect_error(capsys, tmp_path, ["inspect", tmp_path / "nowhere"], "nowhere", "no such file")
    expect_error(capsys, tmp_path, ["inspect", tmp_path], str(tmp_path), "no config.json")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_needing_unsafe_load_is_refused(tmp_path, capsys, ids_file):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        torch.save({"model_state_dict": {}, "model_config": Evil()}, f)
    line = expect_error(capsys, tmp_path, logits_args(p, ids_file, tmp_path), str(p), "unsafe unpickling")
    assert "never executed" in line
    assert "this must never run" not in capsys.readouterr().out
    p2 = tmp_path / "trunc.pth"
    good = tmp_path / "good.pth"
    torch.save({"model_state_dict": {"a": torch.zeros(1000)}, "model_config": {}}, good)
    p2.write_bytes(good.read_bytes()[:500])
    expect_error(capsys, tmp_path, ["inspect", p2], str(p2), "cannot read")
    p3 = tmp_path / "plain.pt"
    with open(p3, "wb") as f:
        pickle.dump([1, 2], f)
    expect_error(capsys, tmp_path, ["inspect", p3], str(p3))


def test_training_pth_problems(ckpt, tmp_path, capsys):
    sd = {k[len("model."):]: v for k, v in load_tensors(ckpt).items()}
    p = tmp_path / "x.pth"
    torch.save({"model_state_dict": sd, "model_config": {"vocab_size": 6144, "D": 64, "N": 8, "K": 16,
                                                         "num_layers": 2}}, p)
    expect_error(capsys, tmp_path, ["inspect", p], str(p), "missing D_ff")
    sd.pop("norm.gain")
    torch.save({"model_state_dict": sd, "model_config": {"vocab_size": 6144, "D": 64, "N": 8, "K": 16,
                                                         "num_layers": 2, "D_ff": 192}}, p)
    expect_error(capsys, tmp_path, ["inspect", p], str(p), "missing 1 tensor", "norm.gain")


def test_generate_option_errors(ns_tiny, tmp_path, capsys, ids_file):
    prompt = tmp_path / "p.json"
    prompt.write_text("[3, 87, 93]")
    expect_error(capsys, tmp_path, ["generate", ns_tiny, "--prompt-ids", prompt, "--stdp"], str(ns_tiny),
                 "--stdp", "Nord")
    expect_error(capsys, tmp_path, ["generate", ns_tiny], "exactly one of --prompt")
    expect_error(capsys, tmp_path, ["generate", ns_tiny, "--prompt-ids", prompt, "--chat"], "--chat")
    expect_error(capsys, tmp_path, ["generate", ns_tiny, "--prompt-ids", prompt, "--system", "x"], "--system")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable(ns_tiny, tmp_path, capsys, ids_file):
    expect_error(capsys, tmp_path, logits_args(ns_tiny, ids_file, tmp_path) + ["--device", "cuda"],
                 "CUDA is not available")
