"""Tiling, placement and report. Graphs are built here by hand (or by the shape-only lowering);
expected values come from hand computation, never from the partitioner itself."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from ns_compile.errors import UserError
from ns_compile.ir import Direct, Graph, HostOp, Population, Stage, Synapse
from ns_compile.partition import BUDGETS, InfeasibleError, load_profile, partition_graph


def make_profile(tmp_path, name="tiny", chips=1, cores=128, **core):
    d = {"format": "ns-compile-hardware-profile/1", "name": name, "description": "test profile",
         "extends": "loihi2-chip",
         "system": {"chips": {"value": chips, "source": "test", "confidence": "test"}},
         "chip": {"neurocores": {"value": cores, "source": "test", "confidence": "test"}},
         "core": {k: {"value": v, "source": "test", "confidence": "test"} for k, v in core.items()}}
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(d))
    return load_profile(f)


def chain_graph(sizes=(64, 96, 32), frames=4, binary=False, bits=None):
    """host drive → p0 → p1 → ... → readout; dense synapses between consecutive populations."""
    g = Graph(family="test", config={"D": sizes[0]})
    names = [f"p{i}" for i in range(len(sizes))]
    for i, (n, s) in enumerate(zip(names, sizes)):
        g.add_population(Population(n, "plif_static", s, "st", depth=i, meta={"binary": binary}))
    for i in range(1, len(sizes)):
        syn = Synapse(f"w{i}", names[i - 1], names[i], "I", None, shape=(sizes[i], sizes[i - 1]),
                      input_kind="binary" if binary else "graded")
        if bits:
            syn.fmt["bits"] = bits
        g.add_synapse(syn)
    g.add_host_op(HostOp("drv", "rmsnorm_drive", ["H"], ["drive"]))
    g.add_host_op(HostOp("agg", "ponder_residual", ["H", "F"], ["H"]))
    g.stages.append(Stage("st", frames, "drv", [names[0]], names, names[-1], "agg"))
    g.program = ["drv", "st", "agg"]
    g.validate()
    return g


def ns_shape_graph(D=64, N=8, K=4, L=2, Dff=192, V=256):
    from ns_compile.lower.neuronspark import lower_neuronspark
    cfg = {"model_type": "neuronspark", "vocab_size": V, "D": D, "N": N, "K": K, "num_layers": L, "D_ff": Dff,
           "v_th_min": 0.1}
    return lower_neuronspark(cfg, None)


def check_budgets(res):
    """Every tile and every core within every budget; tiles cover every population exactly."""
    t = res.tiling
    assert np.all(t.demand <= t.capacity[None, :] + 1e-9)
    for pl in (res.placement, res.naive):
        load = np.zeros((int(pl.core_of_tile.max()) + 1, len(BUDGETS)))
        np.add.at(load, pl.core_of_tile, t.demand / t.capacity)
        assert load.max() <= 1.0 + 1e-9
        assert np.all(pl.chip_of_tile == pl.core_of_tile // res.profile.cores_per_chip)
        assert pl.chip_of_tile.max() < res.profile.chips
    for pt in t.pops:
        sl = slice(pt.first_tile, pt.first_tile + pt.R * pt.C)
        rows = t.tile_rows[sl].reshape(pt.R, pt.C)
        assert np.all(rows == rows[:, :1]) and rows[:, 0].sum() == pt.size
        assert np.array_equal(t.tile_row0[sl].reshape(pt.R, pt.C)[:, 0], np.cumsum(rows[:, 0]) - rows[:, 0])
        assert np.array_equal(t.tile_chunk[sl].reshape(pt.R, pt.C), np.tile(np.arange(pt.C), (pt.R, 1)))


def synapses_in_tiles(res, pop):
    """Synapses held by the tiles of `pop` (rows × chunk columns), summed: must equal the groups'."""
    t = res.tiling
    pt = next(p for p in t.pops if p.name == pop)
    total = 0
    for s in pt.sources:
        b = pt.bounds(s.width)
        for j in range(pt.R * pt.C):
            tid = pt.first_tile + j
            k = int(t.tile_chunk[tid])
            total += int(t.tile_rows[tid]) * int(b[k + 1] - b[k]) * len(s.groups)
    return total


# ---- budgets -------------------------------------------------------------------------------------

def test_small_graph_fits_one_core():
    g = chain_graph((16, 16, 8))
    res = partition_graph(g, "oheo-gulch")
    check_budgets(res)
    assert res.chips_used == 1 and res.cores_used == 1
    j = res.to_json()
    assert j["cores_lower_bound"] == 1 and j["inter_chip_messages_per_token"] == 0
    assert j["inter_core_messages_per_token"] == 0
    # p0 -> p1 (16 neurons) and p1 -> p2 every frame: 32 messages/frame × 4 frames, all inside one core
    assert j["intra_core_messages_per_token"] == pytest.approx((16 + 16) * 4)


def test_tiny_budget_forces_row_and_fanin_split(tmp_path):
    # 300 synapses per core at 8 bits (75 units × 4), 40 input axons: a 64-wide fan-in must be split
    prof = make_profile(tmp_path, synapse_memory_units=75, input_axons=40, neurons=64)
    g = chain_graph((64, 96, 32))
    res = partition_graph(g, prof)
    check_budgets(res)
    p1 = next(p for p in res.tiling.pops if p.name == "p1")
    p2 = next(p for p in res.tiling.pops if p.name == "p2")
    assert p1.C > 1 and p1.R > 1 and p2.C > 1
    assert synapses_in_tiles(res, "p1") == 96 * 64
    assert synapses_in_tiles(res, "p2") == 32 * 96
    assert res.cores_used > 1
    # partial sums travel relay → soma: one 64-bit message per row per frame per relay tile
    assert res.to_json()["inter_core_messages_per_token"] > 0


def test_weight_bits_change_synapse_memory():
    g = ns_shape_graph(D=128, L=2)
    r8 = partition_graph(g, "oheo-gulch", weight_bits=8)
    r4 = partition_graph(g, "oheo-gulch", weight_bits=4)
    r2 = partition_graph(g, "oheo-gulch", weight_bits=2)
    check_budgets(r4)
    syn = g.synapse_count()
    # lower bound from the weights alone: synapses / (spu(b) × 12000), hand-computed
    for r, spu in ((r8, 4), (r4, 8), (r2, 16)):
        assert r.model_bound["synapse_memory_cores"] == -(-syn // (spu * 12000))
    assert r2.cores_used <= r4.cores_used <= r8.cores_used
    assert r4.to_json()["weight_bits"] == [4]


def test_quantized_bits_are_used():
    g = chain_graph((256, 512, 256), bits=2)
    res = partition_graph(g, "oheo-gulch")
    assert set(res.tiling.weight_bits.values()) == {2}
    with pytest.raises(UserError, match="weight precision 9 bits"):
        g2 = chain_graph((8, 8), bits=9)
        partition_graph(g2, "oheo-gulch")


# ---- infeasible ----------------------------------------------------------------------------------

def test_output_axon_budget_error_names_population_and_excess(tmp_path):
    # p0 feeds 3 populations, each needing 2 row tiles (neurons=2): 6 destination tiles per neuron,
    # but a core has 4 output axons → impossible even with one neuron per tile, exceeds by 2
    prof = make_profile(tmp_path, output_axons=4, neurons=2)
    g = Graph(family="test", config={})
    g.add_population(Population("src", "plif_static", 2, "st"))
    for q in ("a", "b", "c"):
        g.add_population(Population(q, "plif_static", 4, "st", depth=1))
        g.add_synapse(Synapse(f"w_{q}", "src", q, "I", None, shape=(4, 2)))
    g.add_population(Population("ro", "accumulate", 4, "st", depth=2))
    for q in ("a", "b", "c"):
        g.directs.append(Direct(q, "ro", "A"))
    g.add_host_op(HostOp("drv", "rmsnorm_drive", ["H"], ["drive"]))
    g.add_host_op(HostOp("agg", "ponder_residual", ["H", "F"], ["H"]))
    g.stages.append(Stage("st", 2, "drv", ["src"], ["src", "a", "b", "c", "ro"], "ro", "agg"))
    with pytest.raises(InfeasibleError) as ei:
        partition_graph(g, prof)
    msg = str(ei.value)
    # the consumers are sized first; whichever population cannot be placed is named with the
    # output-axon budget and the excess
    assert "output axons" in msg and "exceeds by" in msg
    assert "'src'" in msg or "row tile" in msg or "'a'" in msg


def test_synapse_memory_error_even_after_split(tmp_path):
    # one synapse unit per core, but every neuron has two groups (two ports) of different sources:
    # a tile always holds ≥ 2 units (one per group) even split to single columns → exceeds by 1
    prof = make_profile(tmp_path, synapse_memory_units=1)
    g = Graph(family="test", config={})
    g.add_population(Population("x", "plif_static", 4, "st"))
    g.add_population(Population("y", "plif_static", 4, "st"))
    g.add_population(Population("z", "plif_selective", 3, "st", depth=1))
    g.add_synapse(Synapse("wx", "x", "z", "I", None, shape=(3, 4)))
    g.add_synapse(Synapse("wy", "y", "z", "XB", None, shape=(3, 4)))
    g.add_host_op(HostOp("drv", "rmsnorm_drive", ["H"], ["drive"]))
    g.add_host_op(HostOp("agg", "ponder_residual", ["H", "F"], ["H"]))
    g.stages.append(Stage("st", 2, "drv", ["x", "y"], ["x", "y", "z"], "z", "agg"))
    with pytest.raises(InfeasibleError) as ei:
        partition_graph(g, prof)
    msg = str(ei.value)
    assert "population 'z'" in msg and "synapse memory units" in msg
    assert "needs 2" in msg and "has 1" in msg and "exceeds by 1" in msg
    assert "wx" in msg and "wy" in msg


def test_chips_cannot_hold_model(tmp_path):
    prof = make_profile(tmp_path, name="small", chips=1, cores=4)
    g = ns_shape_graph(D=128, L=2)
    syn = g.synapse_count()
    need = -(-syn // (4 * 12000))                    # hand bound at 8 bits
    with pytest.raises(InfeasibleError) as ei:
        partition_graph(g, prof)
    msg = str(ei.value)
    assert "'small'" in msg and "4 cores" in msg and "synapse_memory" in msg and "exceeds by" in msg
    lb = int(msg.split("at least ")[1].split(" cores")[0])
    assert lb >= need and f"exceeds by {lb - 4} cores" in msg


def test_activity_argument_validated_and_used():
    g = chain_graph((64, 64, 64))
    a = partition_graph(g, "oheo-gulch")
    b = partition_graph(g, "oheo-gulch", activity={"p0": 0.25, "p1": 0.25})
    ja, jb = a.to_json(), b.to_json()
    tot = lambda j: j["inter_core_messages_per_token"] + j["intra_core_messages_per_token"]  # noqa: E731
    assert tot(jb) == pytest.approx(tot(ja) * 0.25)
    with pytest.raises(UserError, match="activity"):
        partition_graph(g, "oheo-gulch", activity={"p0": 1.5})


def test_binary_spikes_cost_less_than_graded():
    gb = chain_graph((64, 64), binary=True)
    gg = chain_graph((64, 64))
    rb, rg = partition_graph(gb, "oheo-gulch"), partition_graph(gg, "oheo-gulch")
    # binary: activity 0.1 by default and 32-bit messages; graded: every frame, 32 + 16 bits
    assert rb.tiling.pops[0].msg_bits == 32 and rg.tiling.pops[0].msg_bits == 48
    assert rb.tiling.pops[0].activity == pytest.approx(0.1) and rg.tiling.pops[0].activity == 1.0


# ---- placement -----------------------------------------------------------------------------------

def test_metis_traffic_not_worse_than_naive():
    g = ns_shape_graph(D=512, N=8, K=16, L=3, Dff=1536, V=2048)
    res = partition_graph(g, "kapoho-point")
    check_budgets(res)
    j = res.to_json()
    n = j["naive"]
    assert j["chips_used"] > 1
    assert j["inter_chip_messages_per_token"] <= n["inter_chip_messages_per_token"]
    assert j["inter_chip_bits_per_token"] <= n["inter_chip_bits_per_token"]
    off = lambda x: x["inter_chip_messages_per_token"] + x["inter_core_messages_per_token"]  # noqa: E731
    assert off(j) <= off(n)
    assert j["chips_used"] <= n["chips_used"] and j["cores_used"] <= n["cores_used"]
    # the chip matrix sums to the inter-chip traffic
    assert res.metrics["chip_matrix"].sum() == pytest.approx(j["inter_chip_messages_per_token"])


def test_traffic_conservation():
    """All messages are counted once: intra-core + inter-core + inter-chip = the hand-computed total."""
    g = ns_shape_graph(D=64, N=8, K=4, L=2, Dff=192)
    res = partition_graph(g, "oheo-gulch")
    j = res.to_json()
    D, DN, F, K, L = 64, 512, 192, 4, 2
    # per frame: block.in → hid (R_hid tiles) and → out (R_out); hid → out; ffn.in → gate, up, out;
    # gate/up → prod (direct); prod → out. Every producer neuron sends to each row tile of each consumer.
    pops = {p.name: p for p in res.tiling.pops}
    total = 0
    for i in range(L):
        b, f = f"L{i}.block", f"L{i}.ffn"
        R = lambda n: pops[n].R  # noqa: E731
        total += D * (R(f"{b}.hid") + R(f"{b}.out")) + DN * R(f"{b}.out")
        total += D * (R(f"{f}.gate") + R(f"{f}.up") + R(f"{f}.out")) + 2 * F + F * R(f"{f}.out")
        for n in (f"{b}.hid", f"{b}.out", f"{f}.gate", f"{f}.up", f"{f}.out"):
            p = pops[n]
            total += p.size * p.ports * (p.C - 1)           # partial sums, relay → soma
    total *= K
    got = j["intra_core_messages_per_token"] + j["inter_core_messages_per_token"] + j["inter_chip_messages_per_token"]
    assert got == pytest.approx(total)


def test_host_side_listing():
    g = ns_shape_graph(D=64, N=8, K=4, L=2, Dff=192, V=256)
    res = partition_graph(g, "oheo-gulch")
    h = res.to_json()["host"]
    kinds = {o["kind"] for o in h["ops"]}
    assert kinds == {"embedding", "rmsnorm_drive", "ponder_residual", "decode", "lm_head", "sample"}
    assert all(o["where"] in ("host_cpu", "embedded_x86") for o in h["ops"])
    # readouts: 4 ponder + 1 decode, each K=4 frames of 64 values at 24 bits
    assert h["chip_to_host_bits_per_token"] == pytest.approx(5 * 4 * 64 * 24)
    # drives on the embedded x86: H (64 values) once per stage, 5 stages
    assert h["host_to_chip_bits_per_token"] == pytest.approx(5 * 64 * 24)
    lm = next(o for o in h["ops"] if o["kind"] == "lm_head")
    assert lm["macs_per_token"] == 256 * 64 and lm["where"] == "host_cpu"


def test_report_files_and_json(tmp_path):
    g = ns_shape_graph(D=128, L=2)
    res = partition_graph(g, "kapoho-point")
    files = res.write_report(tmp_path / "rep")
    names = {os.path.basename(f) for f in files}
    assert {"plan.json", "report.txt", "core_utilization_metis.png", "chip_traffic_metis.png",
            "core_utilization_naive.png", "chip_traffic_naive.png"} <= names
    for f in files:
        if f.endswith(".png"):
            assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    plan = json.loads((tmp_path / "rep" / "plan.json").read_text())
    assert len(plan["map"]["tile_core"]) == plan["tiles"]
    for k in ("chips_used", "chips_lower_bound", "cores_used", "inter_chip_messages_per_token", "naive",
              "latency_s_per_token", "energy_j_per_token", "constants", "assumptions", "host"):
        assert k in plan
    for leaf in plan["constants"].values():
        assert leaf["source"] and leaf["confidence"]
    text = res.render()
    assert "METIS" in text and "naive fill" in text and "chips used" in text


def test_cli_plan_config_only(tmp_path, capsys):
    from ns_compile.cli import main
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"model_type": "neuronspark", "vocab_size": 512, "D": 64, "N": 8,
                                                 "K": 4, "num_layers": 2, "D_ff": 192, "v_th_min": 0.1}))
    with pytest.raises(SystemExit) as ei:
        main(["plan", str(cfg), "--hardware", "oheo-gulch", "--weight-bits", "4", "--json",
              "--report", str(tmp_path / "rep")])
    assert ei.value.code == 0
    j = json.loads(capsys.readouterr().out)
    for k in ("chips_used", "chips_lower_bound", "cores_used", "inter_chip_messages_per_token", "naive"):
        assert k in j
    assert j["weight_bits"] == [4] and j["graph"]["shape_only"]
    assert (tmp_path / "rep" / "core_utilization_metis.png").exists()


# ---- the emulator does not depend on the partition (contract §2 "Splitting") ---------------------

def test_emulator_unchanged_by_tiny_partition(tmp_path):
    from conftest import need_fixture
    ckpt = need_fixture("neuronspark-tiny", "checkpoint")
    pytest.importorskip("ns_compile.sim")
    import torch

    from ns_compile.artifact import load_artifact
    from ns_compile.cli.compile_cmd import compile_checkpoint
    from ns_compile.sim import Emulator

    prof = make_profile(tmp_path, name="tinycore", chips=4, synapse_memory_units=600, input_axons=160, neurons=96)
    compile_checkpoint(ckpt, tmp_path / "plain.nsc", weight_bits=8, include_float=False)
    compile_checkpoint(ckpt, tmp_path / "tiny.nsc", weight_bits=8, include_float=False, hardware=prof.path)
    g0, _ = load_artifact(tmp_path / "plain.nsc")
    g1, _ = load_artifact(tmp_path / "tiny.nsc")
    from ns_compile.artifact import Artifact
    part = Artifact(tmp_path / "tiny.nsc").json("partition.json")
    assert part["cores_used"] > 1 and any(p["column_chunks"] > 1 for p in part["populations"])
    assert any(p["row_chunks"] > 1 for p in part["populations"])
    ids = torch.tensor([[3, 87, 93, 87]])
    a = Emulator(g0).forward(ids)
    b = Emulator(g1).forward(ids)
    assert torch.equal(a, b)


# ---- the 0.9B plan -------------------------------------------------------------------------------

@pytest.mark.slow
def test_neuronspark_09b_on_hala_point_meets_chip_bound():
    from ns_compile.lower.neuronspark import lower_neuronspark
    cfg = {"model_type": "neuronspark", "vocab_size": 6144, "D": 896, "N": 8, "K": 16, "num_layers": 20,
           "D_ff": 2688, "v_th_min": 0.1}
    g = lower_neuronspark(cfg, None)
    t = time.perf_counter()
    res = partition_graph(g, "hala-point")
    dt = time.perf_counter() - t
    j = res.to_json()
    # hand bound from the weights alone: 834,928,640 on-chip synapses at 4 per unit, 12000 units
    assert g.synapse_count() == 834_928_640
    assert j["model_lower_bound"]["chips"] == -(-(-(-834_928_640 // 48_000)) // 128) == 136
    assert j["chips_lower_bound"] >= 136
    assert j["chips_used"] <= 1.10 * j["chips_lower_bound"]
    assert j["inter_chip_messages_per_token"] <= j["naive"]["inter_chip_messages_per_token"]
    assert dt < 60
    check_budgets(res)


def test_tiny_fixture_compiles_onto_one_chip(tmp_path):
    """Issue #4: the conformance fixture compiles and its partition fits one Loihi 2 chip."""
    from conftest import need_fixture
    ckpt = need_fixture("neuronspark-tiny", "checkpoint")
    from ns_compile.artifact import Artifact
    from ns_compile.cli.compile_cmd import compile_checkpoint

    compile_checkpoint(ckpt, tmp_path / "t.nsc", weight_bits=8, include_float=False, hardware="oheo-gulch")
    part = Artifact(tmp_path / "t.nsc").json("partition.json")
    assert part["chips_used"] == 1
    assert 1 <= part["cores_used"] <= 128
    assert part["chips_lower_bound"] == 1
