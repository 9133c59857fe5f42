"""Figures of a placement: utilization, traffic, latency and energy per token, host-side work.

Message model (docs/partition.md §4): a binary spike is one message of `header_bits`; a graded
message adds its payload (16-bit by default, a population's `payload_bits` if set); a partial
accumulator adds `partial_sum_bits`; host values are `host_payload_bits`. Energy and link time of a
message scale with its bits / header_bits ("32-bit message units"); output-axon budgets count
routes, independent of the payload.
"""
from __future__ import annotations

import numpy as np

from ns_compile.partition.tiling import B_AXO, BUDGETS, NB, Tiling

# host op kind -> (default place, why)
HOST_PLACE = {
    "embedding": ("host_cpu", "V x D table is far larger than an embedded core's memory"),
    "rmsnorm_drive": ("embedded_x86", "O(D) reduction + isqrt; holding the drive on chip avoids K host "
                                      "transfers per stage"),
    "ponder_residual": ("host_cpu", "holds out_proj (D x D) and the residual stream"),
    "decode": ("host_cpu", "decode_proj (D x D) and lateral inhibition"),
    "lm_head": ("host_cpu", "tied V x D head"),
    "sample": ("host_cpu", "sampling on de-quantized logits"),
}


def _mesh_xy(local: np.ndarray, mesh) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = mesh
    r = local // cols
    c = local % cols
    c = np.where(r % 2 == 1, cols - 1 - c, c)      # snake order
    return r, c


def evaluate(tiling: Tiling, placement, profile, graph) -> dict:
    P = profile
    cpc = P.cores_per_chip
    header = float(P["messages.header_bits"])
    chip_t = placement.chip_of_tile.astype(np.int64)
    core_t = placement.core_of_tile.astype(np.int64)
    # compact core ids
    cores_u, core_idx = np.unique(core_t, return_inverse=True)
    n_cores = cores_u.size
    chips_u, chip_idx = np.unique(chip_t, return_inverse=True)
    n_chips = chips_u.size

    load = np.zeros((n_cores, NB))
    np.add.at(load, core_idx, tiling.demand / tiling.capacity)
    util = {BUDGETS[b]: {"mean": float(load[:, b].mean()), "p50": float(np.median(load[:, b])),
                         "max": float(load[:, b].max())} for b in range(NB)}

    s, d = tiling.e_src, tiling.e_dst
    msgs = tiling.e_msgs
    units = tiling.e_bits.astype(np.float64) / header          # 32-bit message units per message
    same_core = core_t[s] == core_t[d]
    same_chip = chip_t[s] == chip_t[d]
    inter_chip = ~same_chip
    inter_core = same_chip & ~same_core
    bits = msgs * tiling.e_bits
    local = core_t % cpc
    y, x = _mesh_xy(local, P["chip.mesh"])
    hops = np.abs(y[s] - y[d]) + np.abs(x[s] - x[d])

    # chip-to-chip matrix (messages per token), compact chip indices
    cmat = np.zeros((n_chips, n_chips))
    np.add.at(cmat, (chip_idx[s[inter_chip]], chip_idx[d[inter_chip]]), msgs[inter_chip])

    # ---- latency: stages run one after another; a frame step lasts as long as its slowest core
    stages = [st for st in graph.stages]
    st_index = {st.name: i for i, st in enumerate(stages)}
    pop_stage = np.array([st_index.get(pt.stage, 0) for pt in tiling.pops], np.int64)
    tile_stage = pop_stage[tiling.tile_pop]
    frames = np.array([max(1, int(st.frames)) for st in stages], np.float64)
    nst = len(stages)
    work = np.zeros((nst, n_cores))
    per_tile = tiling.synops * P["time.synaptic_op_s"] + tiling.updates * P["time.neuron_update_s"]
    np.add.at(work, (tile_stage, core_idx), per_tile)
    step_compute = work.max(axis=1) / frames                       # s per frame step
    chip_out = np.zeros((nst, n_chips))
    e_stage = tile_stage[s]
    np.add.at(chip_out, (e_stage[inter_chip], chip_idx[s[inter_chip]]), bits[inter_chip] / 8.0)
    step_link = chip_out.max(axis=1) / frames / P["links.inter_chip_bytes_per_s"] if n_chips > 1 else np.zeros(nst)
    core_out = np.zeros((nst, n_cores))
    off = ~same_core
    np.add.at(core_out, (e_stage[off], core_idx[s[off]]), bits[off] / 8.0)
    step_mesh = core_out.max(axis=1) / frames / P["links.inter_core_bytes_per_s"]
    barrier = P["time.inter_chip_barrier_s"] if n_chips > 1 else P["time.barrier_s"]
    step = np.maximum.reduce([step_compute, step_link, step_mesh, np.full(nst, barrier)])
    depth = np.zeros(nst)
    for pt in tiling.pops:
        p = graph.populations[pt.name]
        i = st_index.get(pt.stage, 0)
        depth[i] = max(depth[i], float(p.depth) + (1.0 if pt.C > 1 else 0.0))   # a fan-in split adds a hop
    steps = frames + depth
    host_rt = P["links.host_round_trip_s"]
    stage_time = steps * step + host_rt
    latency = float(stage_time.sum())
    bound_by = ["compute", "inter-chip links", "mesh links", "barrier"]
    which = np.argmax(np.vstack([step_compute, step_link, step_mesh, np.full(nst, barrier)]), axis=0)

    # ---- energy per token
    E = {
        "synaptic_ops": float(tiling.synops.sum() * P["energy.synaptic_op_j"]),
        "neuron_updates": float(tiling.updates.sum() * P["energy.neuron_update_j"]),
        "messages_intra_core": float((msgs[same_core] * units[same_core]).sum() * P["energy.message_core_j"]),
        "messages_inter_core": float((msgs[inter_core] * units[inter_core] *
                                      (P["energy.message_core_j"] + hops[inter_core] * P["energy.message_hop_j"])).sum()),
        "messages_inter_chip": float((msgs[inter_chip] * units[inter_chip]).sum() * P["energy.message_inter_chip_j"]),
        "host_io_on_chip": float((tiling.host_in_msgs.sum() + tiling.host_out_msgs.sum())
                                 * (header + P["messages.host_payload_bits"]) / header * P["energy.message_core_j"]),
        "static": float(P["energy.static_power_w"] * n_chips * latency),
    }
    energy = float(sum(E.values()))
    return {
        "chips_used": int(n_chips), "cores_used": int(n_cores),
        "utilization": util,
        "core_utilization": load,                     # array, not JSON (report writes it)
        "chip_matrix": cmat,
        "chip_ids": chips_u, "core_ids": cores_u,
        "inter_chip_messages_per_token": float(msgs[inter_chip].sum()),
        "inter_chip_bits_per_token": float(bits[inter_chip].sum()),
        "inter_core_messages_per_token": float(msgs[inter_core].sum()),
        "inter_core_bits_per_token": float(bits[inter_core].sum()),
        "intra_core_messages_per_token": float(msgs[same_core].sum()),
        "mean_mesh_hops": float((msgs[inter_core] * hops[inter_core]).sum() / max(msgs[inter_core].sum(), 1e-300)),
        "latency_s_per_token": latency,
        "latency": {"stages": nst, "steps_per_token": float(steps.sum()),
                    "step_s_min": float(step.min()), "step_s_max": float(step.max()),
                    "host_round_trips_s": float(host_rt * nst),
                    "steps_bound_by": {k: int((which == i).sum()) for i, k in enumerate(bound_by)}},
        "energy_j_per_token": energy,
        "energy_j": E,
        "tokens_per_s": 1.0 / latency if latency > 0 else None,
    }


def host_side(graph, tiling: Tiling, profile) -> dict:
    """Ops that do not run on neurocores, where they go and the host↔chip traffic they cause."""
    P = profile
    hb = int(P["messages.host_payload_bits"])
    pops = graph.populations
    stage_of_drive = {st.drive: st for st in graph.stages}
    stage_of_after = {st.after: st for st in graph.stages}
    D = int(graph.config.get("D", 0) or 0)
    V = int(graph.config.get("vocab_size", 0) or 0)
    lmt_bytes = int(P["chip.embedded_x86_param_bytes"])
    ops = []
    link_in = link_out = 0.0
    for h in graph.host_ops.values():
        place, why = HOST_PLACE.get(h.kind, ("host_cpu", "unknown op kind: host CPU"))
        pbytes = sum(int(np.asarray(v).size) * 2 for v in h.params.values() if v is not None) if h.params else None
        if place == "embedded_x86" and pbytes is not None and pbytes > lmt_bytes:
            place, why = "host_cpu", f"parameters ({pbytes} B) exceed chip.embedded_x86_param_bytes ({lmt_bytes} B)"
        vin = vout = 0.0           # values per token
        cross_in = cross_out = 0.0  # values per token crossing the host CPU <-> chip boundary
        macs = None
        if h.name in stage_of_drive:
            st = stage_of_drive[h.name]
            n = sum(pops[t].size for t in st.drive_targets)
            vin, vout = float(D or n), float(n * st.frames)
            macs = 3.0 * (D or n)
            if place == "host_cpu":
                cross_out = vout       # host sends the drive every frame
            else:
                cross_in = vin         # H goes to the embedded core once; it re-injects K frames on chip
        elif h.name in stage_of_after:
            st = stage_of_after[h.name]
            n = pops[st.readout].size
            vin, vout = float(n * st.frames), float(D or n)
            cross_in = vin if place == "host_cpu" else 0.0
            if h.kind == "ponder_residual":
                macs = float(st.frames * n + n * (D or n))
            elif h.kind == "decode":
                macs = float(st.frames * n + (D or n) * n)
        elif h.kind == "embedding":
            vin, vout, macs = 1.0, float(D), 0.0
        elif h.kind == "lm_head":
            vin, vout, macs = float(D), float(V), float(V * D)
        elif h.kind == "sample":
            vin, vout, macs = float(V), 1.0, float(V)
        link_in += cross_in
        link_out += cross_out
        ops.append({"name": h.name, "kind": h.kind, "where": place, "why": why,
                    "values_in_per_token": vin, "values_out_per_token": vout,
                    "chip_to_host_bits_per_token": cross_in * hb if h.name in stage_of_after else 0.0,
                    "host_to_chip_bits_per_token": (cross_out if place == "host_cpu" else cross_in) * hb
                    if h.name in stage_of_drive else 0.0,
                    "macs_per_token": macs})
    to_chip = sum(o["host_to_chip_bits_per_token"] for o in ops)
    from_chip = sum(o["chip_to_host_bits_per_token"] for o in ops)
    return {"ops": ops,
            "counts": {k: sum(1 for o in ops if o["where"] == k) for k in ("host_cpu", "embedded_x86")},
            "host_to_chip_bits_per_token": to_chip, "chip_to_host_bits_per_token": from_chip,
            "host_link_s_per_token": (to_chip + from_chip) / 8.0 / P["links.host_bytes_per_s"],
            "payload_bits": hb,
            "embedded_x86_cores_per_chip": int(P["chip.embedded_x86_cores"])}
