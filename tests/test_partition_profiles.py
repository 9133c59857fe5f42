"""Hardware profiles: the built-ins load and carry a source and a confidence note on every value;
malformed profiles are rejected with the field and the reason (UserError, exit 2)."""
from __future__ import annotations

import json

import pytest

from ns_compile.errors import UserError
from ns_compile.partition.profile import PROFILE_DIR, SCHEMA, builtin_profiles, load_profile


def test_builtins_and_counts():
    assert set(builtin_profiles()) >= {"loihi2-chip", "oheo-gulch", "kapoho-point", "hala-point"}
    chip = load_profile("loihi2-chip")
    assert chip["chip.neurocores"] == 128 and chip["chip.embedded_x86_cores"] == 6
    assert load_profile("oheo-gulch").chips == 1
    assert load_profile("kapoho-point").chips == 8
    assert load_profile("hala-point").chips == 1152
    assert load_profile("hala-point").chain == ["loihi2-chip", "hala-point"]


@pytest.mark.parametrize("name", ["loihi2-chip", "oheo-gulch", "kapoho-point", "hala-point"])
def test_every_value_has_source_and_confidence(name):
    p = load_profile(name)
    consts = p.constants()
    assert set(consts) == set(SCHEMA)
    for key, leaf in consts.items():
        assert leaf["source"].strip() and leaf["confidence"].strip(), key
    # figures known only for Loihi 1 say so
    for key in ("core.output_axons", "energy.synaptic_op_j", "time.synaptic_op_s"):
        assert "Loihi 1" in consts[key]["confidence"], key
    assert p.synapses_per_unit(8) <= p.synapses_per_unit(4) <= p.synapses_per_unit(1)


def _base():
    return json.loads((PROFILE_DIR / "loihi2-chip.json").read_text())


def _write(tmp_path, d, name="p.json"):
    f = tmp_path / name
    f.write_text(json.dumps(d) if not isinstance(d, str) else d)
    return f


def _mutations():
    def m(fn):
        d = _base()
        fn(d)
        return d

    return [
        (m(lambda d: d["core"].pop("neurons")), "core.neurons", "missing"),
        (m(lambda d: d["core"]["neurons"].update(value=-5)), "core.neurons.value", ">= 1"),
        (m(lambda d: d["core"]["neurons"].update(value=40.5)), "core.neurons.value", "integer"),
        (m(lambda d: d["core"]["input_axons"].pop("source")), "core.input_axons", "missing 'source'"),
        (m(lambda d: d["energy"]["synaptic_op_j"].update(confidence="")), "energy.synaptic_op_j.confidence",
         "non-empty"),
        (m(lambda d: d["core"]["synapses_per_unit"]["value"].pop("3")), "core.synapses_per_unit.value",
         "missing weight precision(s) 3"),
        (m(lambda d: d["core"]["synapses_per_unit"]["value"].update({"8": 64})), "core.synapses_per_unit.value.8",
         "must not increase"),
        (m(lambda d: d["core"].update(bogus={"value": 1, "source": "x", "confidence": "y"})), "core.bogus",
         "unknown field"),
        (m(lambda d: d["links"]["inter_chip_bytes_per_s"].update(value=0)), "links.inter_chip_bytes_per_s.value",
         "> 0"),
        (m(lambda d: d["chip"]["mesh"].update(value=[4, 4])), "chip.mesh.value", "fewer than the 128"),
        (m(lambda d: d.update(format="other/1")), "format", "expected"),
        (m(lambda d: d.update(extends="no-such-profile")), "extends", "no built-in profile"),
        (m(lambda d: d["time"].update(barrier_s="fast")), "time.barrier_s", "must be an object"),
    ]


@pytest.mark.parametrize("data,field,reason", _mutations())
def test_malformed_profile_names_field_and_reason(tmp_path, data, field, reason):
    f = _write(tmp_path, data)
    with pytest.raises(UserError) as ei:
        load_profile(f)
    msg = str(ei.value)
    assert f"'{field}'" in msg and reason in msg, msg
    assert str(f) in msg


def test_not_json_and_missing_file(tmp_path):
    f = _write(tmp_path, "{not json", "bad.json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_profile(f)
    with pytest.raises(UserError, match="no such hardware profile"):
        load_profile(tmp_path / "absent.json")


def test_user_profile_extends_builtin(tmp_path):
    d = {"format": "ns-compile-hardware-profile/1", "name": "two-chips", "description": "test", "extends": "loihi2-chip",
         "system": {"chips": {"value": 2, "unit": "chips", "source": "test", "confidence": "test"}},
         "core": {"neurons": {"value": 100, "source": "test", "confidence": "test"}}}
    p = load_profile(_write(tmp_path, d))
    assert p.chips == 2 and p["core.neurons"] == 100 and p["core.synapse_memory_units"] == 12000
    assert p.chain == ["loihi2-chip", "two-chips"]


def test_cli_bad_profile_exit_2(tmp_path, capsys):
    from ns_compile.cli import main
    d = _base()
    d["core"]["output_axons"]["value"] = "many"
    f = _write(tmp_path, d)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"model_type": "neuronspark", "vocab_size": 64, "D": 8, "N": 2,
                                                 "K": 2, "num_layers": 1, "D_ff": 16, "v_th_min": 0.1}))
    with pytest.raises(SystemExit) as ei:
        main(["plan", str(cfg), "--hardware", str(f)])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "core.output_axons.value" in err and "integer" in err
    assert len(err.strip().splitlines()) == 1
