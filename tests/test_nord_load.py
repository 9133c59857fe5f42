"""Nord loading: config-only inspect counts (nord.md §1.1, §2.7, §3.3) and the bad-input contract."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import need_fixture
from ns_compile.errors import UserError
from ns_compile.models.nord import is_nord_config, load_nord, looks_like_nord

V3_144M = {"model_family": "nord", "vocab_size": 128256, "d_model": 512, "n_heads": 8, "n_layers": 6, "d_ff": 1024,
           "n_clusters": 64, "T": 8, "T_slow": 2, "max_seq_len": 512, "persistent_mem": False}
V42_618M = {"vocab_size": 128256, "d_model": 1536, "n_heads": 24, "d_ff": 4096, "n_clusters": 128, "T": 8,
            "T_slow": 2, "max_seq_len": 192, "sensory_layers": 3, "association_layers": 3, "executive_layers": 4,
            "n_experts": 4, "top_k_experts": 2, "memory_size": 256, "memory_n_read_heads": 8,
            "persistent_mem": False}
V42_140M = {"vocab_size": 128256, "d_model": 496, "n_heads": 8, "d_ff": 1024, "n_clusters": 64,
            "sensory_layers": 2, "association_layers": 2, "executive_layers": 2, "n_experts": 4,
            "memory_size": 128, "memory_n_read_heads": 4}


def _config_dir(tmp_path: Path, cfg: dict) -> Path:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


# ---- config-only inspect ---------------------------------------------------------------------

def test_v3_144m_counts_from_config_only(tmp_path):
    h = load_nord(_config_dir(tmp_path, V3_144M))
    assert not h.has_weights and h.version == "v3"
    info = h.inspect()
    p = info["parameters"]
    assert p["total"] == 144_334_525
    assert p["by_component"]["encoder"] == 65_934_338
    assert all(v == 2_120_457 for v in p["per_block"].values()) and len(p["per_block"]) == 6
    rest = p["by_component"]["input_lif"] + p["by_component"]["readout"] + p["by_component"]["lm_head"]
    assert rest == 65_677_445
    # §3.3: 16,384 LIF neurons per position per timestep; 512 + per block 512+512+1024+512 + 512
    assert info["neurons_per_position_per_timestep"] == {"active": 16_384, "physical": 16_384}
    assert info["neuron_updates_per_token"] == 163_840
    pops = {q["name"]: q for q in info["lif_populations"]}
    assert pops["blocks.0.ffn.lif1"]["neurons"] == 1024 and pops["blocks.0.ffn.lif2"]["input"] == "binary"
    assert pops["blocks.0.resonance.lif_q"]["input"] == "graded"
    assert pops["readout_lif"]["emits_membrane"]
    st = info["synapse_totals"]
    assert st["binary_spike_fed"] == 6 * 524_288          # only FFN-down sees binary spikes
    ffw = sum(s["weights"] for s in info["synapses"] if s["name"].startswith("blocks."))
    assert ffw == 12_582_912
    assert any("top-k" in o["op"] for o in info["host_ops"])
    json.dumps(info)                                     # JSON-serialisable
    assert "16,384" in h.format_inspect(info)
    with pytest.raises(UserError, match="config-only"):
        h.logits(torch.tensor([[1, 2]]))


def test_v42_618m_counts_from_config_only(tmp_path):
    h = load_nord(_config_dir(tmp_path, V42_618M))
    assert h.version == "v4"
    info = h.inspect()
    c = info["parameters"]["by_component"]
    assert info["parameters"]["total"] == 618_814_913
    assert c["sensory"] == 66_321_495
    assert c["association"] == 66_366_441
    assert c["memory"] == 1_282_054
    assert c["executive"] == 88_428_660
    assert c["encoder"] + c["input_lif"] + c["readout"] + c["lm_head"] == 396_416_263
    assert info["parameters"]["per_block"]["sensory_blocks.0"] == 22_107_165
    assert info["parameters"]["per_block"]["association_blocks.0"] == 22_122_147
    assert info["neurons_per_position_per_timestep"] == {"active": 93_696, "physical": 109_056}
    assert info["attention_path"].startswith("sdpa")


def test_v42_140m_count(tmp_path):
    h = load_nord(_config_dir(tmp_path, V42_140M))
    assert h.inspect()["parameters"]["total"] == 139_853_703


def test_config_json_detection(tmp_path):
    assert is_nord_config({"model_family": "nord"})
    assert is_nord_config({"d_model": 64, "n_clusters": 8})
    assert not is_nord_config({"model_type": "neuronspark", "d_model": 64, "n_clusters": 8})
    assert not is_nord_config({"hidden_size": 64})
    d = _config_dir(tmp_path, {k: v for k, v in V3_144M.items() if k != "model_family"})
    assert looks_like_nord(d) and looks_like_nord(d / "config.json")
    assert load_nord(d / "config.json").inspect()["parameters"]["total"] == 144_334_525


def test_fixture_counts_and_shape_only_load():
    h3 = load_nord(need_fixture("nord", "v3", "nord_final.pt"), weights=False)
    assert not h3.has_weights and h3.inspect()["parameters"]["total"] == 138_473
    h4 = load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"), weights=False)
    assert h4.inspect()["parameters"]["total"] == 180_018
    assert h4.inspect()["checkpoint"]["dropped_state_keys"] == ["memory_cortex.memory_lif._v_mem_state",
                                                                "memory_cortex.memory_lif._i_syn_state"]
    # the stored config wins over defaults (n_clusters 8, resonance_top_k 4, not 64/64)
    assert h3.config.n_clusters == 8 and h3.config.resonance_top_k == 4
    assert h3.config.device == "cpu"


def test_directory_with_checkpoint_picks_final(tmp_path):
    src = need_fixture("nord", "v3", "nord_final.pt")
    (tmp_path / "nord_final.pt").write_bytes(src.read_bytes())
    (tmp_path / "nord_step_0000001.pt").write_bytes(b"garbage")
    assert looks_like_nord(tmp_path)
    assert load_nord(tmp_path).path.name == "nord_final.pt"


def test_keep_state_keeps_persistent_buffers():
    h = load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"), keep_state=True)
    v, i = h.checkpoint.state["memory_cortex.memory_lif"]
    assert v.shape == (24, 32) and i.shape == (24, 32)


# ---- bad inputs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v3_ckpt():
    return torch.load(need_fixture("nord", "v3", "nord_final.pt"), weights_only=True)


def _save(tmp_path, obj, name="nord_bad.pt"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def _expect(path, pattern, **kw):
    with pytest.raises(UserError, match=pattern) as ei:
        load_nord(path, **kw)
    assert str(path) in ei.value.format()
    assert "\n" not in ei.value.format()
    return ei.value


class _Payload:
    """Unpickling this would create a marker file; a safe loader must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_refuses_arbitrary_pickled_objects(tmp_path, v3_ckpt):
    marker = tmp_path / "pwned"
    p = _save(tmp_path, {**v3_ckpt, "extra": _Payload(str(marker))})
    _expect(p, "arbitrary unpickling")
    assert not marker.exists()


def test_module_prefix_and_training_extras_are_accepted(tmp_path, v3_ckpt):
    sd = {"module." + k: v for k, v in v3_ckpt["model_state_dict"].items()}
    p = _save(tmp_path, {"model_state_dict": sd, "config": v3_ckpt["config"], "step": 3, "loss": 1.0,
                         "optimizer_state_dict": {"state": {}, "param_groups": []}})
    h = load_nord(p)
    ref = load_nord(need_fixture("nord", "v3", "nord_final.pt"))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert torch.equal(h.logits(ids), ref.logits(ids))


def test_missing_key_is_named(tmp_path, v3_ckpt):
    sd = dict(v3_ckpt["model_state_dict"])
    del sd["blocks.1.resonance.W_k.weight"]
    _expect(_save(tmp_path, {**v3_ckpt, "model_state_dict": sd}), r"missing 1 key\(s\): blocks\.1\.resonance\.W_k\.weight")


def test_unexpected_key_is_named(tmp_path, v3_ckpt):
    sd = dict(v3_ckpt["model_state_dict"])
    sd["blocks.0.bogus"] = torch.zeros(3)
    _expect(_save(tmp_path, {**v3_ckpt, "model_state_dict": sd}), r"unexpected 1 key\(s\): blocks\.0\.bogus")


def test_misshaped_key_is_named(tmp_path, v3_ckpt):
    sd = dict(v3_ckpt["model_state_dict"])
    sd["blocks.0.ffn.up.weight"] = torch.zeros(100, 64)
    _expect(_save(tmp_path, {**v3_ckpt, "model_state_dict": sd}),
            r"blocks\.0\.ffn\.up\.weight has shape \(100, 64\), config implies \(128, 64\)")


def test_nan_weight_is_named(tmp_path, v3_ckpt):
    sd = dict(v3_ckpt["model_state_dict"])
    w = sd["blocks.0.resonance.W_v.weight"].clone()
    w[3, 4] = float("nan")
    sd["blocks.0.resonance.W_v.weight"] = w
    sd["lm_head.weight"] = sd["lm_head.weight"].clone()
    sd["lm_head.weight"][0, 0] = float("inf")
    _expect(_save(tmp_path, {**v3_ckpt, "model_state_dict": sd}),
            r"NaN/Inf.*blocks\.0\.resonance\.W_v\.weight, lm_head\.weight")


def test_config_contradicting_weights(tmp_path, v3_ckpt):
    cfg = dict(v3_ckpt["config"], d_model=128)
    _expect(_save(tmp_path, {**v3_ckpt, "config": cfg}), r"d_model=128 but encoder\.embed\.weight has 64 columns")
    cfg = dict(v3_ckpt["config"], n_clusters=64)    # what the upstream chat would silently assume
    _expect(_save(tmp_path, {**v3_ckpt, "config": cfg}, "b.pt"), r"n_clusters=64")
    cfg = dict(v3_ckpt["config"], sensory_layers=1)  # v4 config over v3 weights
    _expect(_save(tmp_path, {**v3_ckpt, "config": cfg}, "c.pt"), r"config is Nord v4.*weights are v3")


def test_v4_rope_table_pins_max_seq_len(tmp_path):
    ck = torch.load(need_fixture("nord", "v42", "nord_v4_final.pt"), weights_only=True)
    _expect(_save(tmp_path, {**ck, "config": dict(ck["config"], max_seq_len=64)}), r"max_seq_len=64.*RoPE")


def test_unsupported_v5_module_is_refused(tmp_path):
    ck = torch.load(need_fixture("nord", "v42", "nord_v4_final.pt"), weights_only=True)
    _expect(_save(tmp_path, {**ck, "config": dict(ck["config"], genesis_autogenic_v5=True)}), r"genesis_autogenic_v5")


def test_truncated_and_garbage_files(tmp_path):
    data = need_fixture("nord", "v3", "nord_final.pt").read_bytes()
    p = tmp_path / "nord_trunc.pt"
    p.write_bytes(data[: len(data) // 2])
    _expect(p, "truncated or corrupt")
    _expect(p, "truncated or corrupt", weights=False)
    g = tmp_path / "nord_garbage.pt"
    g.write_bytes(b"\x00" * 100)
    _expect(g, "truncated or corrupt|cannot read")


def test_structural_problems(tmp_path, v3_ckpt):
    _expect(_save(tmp_path, v3_ckpt["model_state_dict"], "a.pt"), "without a `config`")
    _expect(_save(tmp_path, {"model_state_dict": v3_ckpt["model_state_dict"]}, "b.pt"), "no `config`")
    _expect(_save(tmp_path, [1, 2, 3], "c.pt"), "expected a dict")
    _expect(_save(tmp_path, {**v3_ckpt, "config": dict(v3_ckpt["config"], d_model="x")}, "d.pt"),
            "must be an integer")
    _expect(tmp_path / "nope.pt", "no such file")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    _expect(bad, "not valid JSON")
    (bad / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4}))
    _expect(bad, "not a Nord config")


def test_bad_token_ids_and_dtype():
    h = load_nord(need_fixture("nord", "v3", "nord_final.pt"))
    with pytest.raises(UserError, match="outside the vocabulary"):
        h.logits(torch.tensor([[1, 512]]))
    with pytest.raises(UserError, match="float32 only"):
        h.logits(torch.tensor([[1, 2]]), dtype=torch.bfloat16)
    h4 = load_nord(need_fixture("nord", "v42", "nord_v4_final.pt"))
    with pytest.raises(UserError, match="exceeds max_seq_len"):
        h4.logits(torch.zeros(1, 33, dtype=torch.long))
