"""Quantization: float IR Graph → integer Graph (docs/fixed_point.md), with a calibration report.

`quantize(graph, calib_ids, weight_bits=8)` runs the float IR interpreter on the calibration
tokens (ns_compile.quant.calibrate), then chooses every frac:

- synapse weights: b-bit mantissas M = qm(w, f_W, b), one f_W per group, chosen by an MSE search
  over f_max … f_max+3 (f_max: the largest frac that clips nothing); with `per_channel` (default)
  row i at f_W + r_i, r the receiving port's shift vector RS (docs/fixed_point.md §2.1,
  ns_compile.quant.per_channel);
- payloads (16-bit, 15-bit into products): frac by the `percentile` (99.99 %) of |V_post|;
- membrane state and ports (24-bit): frac by max |x| over the calibration with a 2× margin
  (state: max |V_post| + max |θ|, the bound of V_pre);
- host: H, Z, Y, F (24-bit) by max with margin; host matrices and gains 16-bit mantissas (§1).

The returned report (a JSON-able dict) lists per layer and group: bits, fracs, clipped fraction,
weight and activation quantization error (RMS / max), and every accumulator that can leave int32
or 24 bits (worst case over all inputs, and as seen in calibration), by how much.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ns_compile.errors import UserError
from ns_compile.quant.calibrate import DEFAULT_TEXT, Recorder, run_calibration  # noqa: F401
from ns_compile.quant import per_channel as _pc
from ns_compile.quant.luts import build_luts

HOST_BITS = 16
STATE_MARGIN = 2.0
MIN_FRAC, MAX_FRAC = -16, 40


def q(x, f: int) -> np.ndarray:
    """docs §0: floor(x·2^f + 0.5) in float64 → int64."""
    return np.floor(np.asarray(x, dtype=np.float64) * (2.0 ** f) + 0.5).astype(np.int64)


def qm(x, f: int, n: int) -> np.ndarray:
    """n-bit signed mantissa: clamp(q(x, f), −2^(n−1), 2^(n−1) − 1)."""
    return np.clip(q(x, f), -(1 << (n - 1)), (1 << (n - 1)) - 1)


def sat_np(x: np.ndarray, n: int) -> np.ndarray:
    m = (1 << (n - 1)) - 1
    return np.clip(x, -m, m)


def frac_for(r: float, bits: int) -> int:
    """Largest f with r·2^f ≤ 2^(bits−1) − 1 (clamped to a sane range)."""
    if not (r > 0) or not math.isfinite(r):
        return min(MAX_FRAC, bits - 1)
    f = math.floor(math.log2(((1 << (bits - 1)) - 1) / r))
    return int(min(MAX_FRAC, max(MIN_FRAC, f)))


def _weight_error(w: np.ndarray, M: np.ndarray, f, bits: int) -> dict:
    """f: one frac, or per row ([rows, 1] int array, §2.1)."""
    f = np.asarray(f, dtype=np.float64) if np.ndim(f) else f
    deq = M.astype(np.float64) * 2.0 ** -f
    w = w.astype(np.float64)
    e = deq - w
    lim = ((1 << (bits - 1)) - 1) * 2.0 ** -f
    rms_w = float(np.sqrt(np.mean(w * w))) if w.size else 0.0
    rms_e = float(np.sqrt(np.mean(e * e))) if w.size else 0.0
    return {"clipped_frac": float(np.mean(np.abs(w) > lim + 2.0 ** (-f - 1))) if w.size else 0.0,
            "err_rms": rms_e, "err_max": float(np.abs(e).max()) if w.size else 0.0,
            "rel_err_rms": rms_e / rms_w if rms_w > 0 else 0.0}


def choose_weight_frac(w: np.ndarray, bits: int) -> int:
    """MSE search over f_max … f_max+3 (more resolution at the price of clipping outliers)."""
    f0 = frac_for(float(np.abs(w).max()) if w.size else 0.0, bits)
    best, best_f = None, f0
    sample = w.ravel()
    if sample.size > 1 << 20:
        sample = sample[:: sample.size // (1 << 20) + 1]
    sample = sample.astype(np.float64)
    for f in range(f0, f0 + 4):
        e = qm(sample, f, bits) * 2.0 ** -f - sample
        mse = float(np.mean(e * e))
        if best is None or mse < best * (1 - 1e-9):
            best, best_f = mse, f
    return best_f


def _act(rec: Recorder, name: str, frac: int, bits: int, floor_shift: bool = False) -> dict:
    """Quantization error of one recorded activation at (frac, bits): clipped fraction, RMS, max."""
    s = rec.sample(name)
    out = {"frac": int(frac), "bits": int(bits), "max": rec.max(name), "p99.99": rec.pct(name, 99.99)}
    if s.size == 0:
        return out
    m = (1 << (bits - 1)) - 1
    x = s * 2.0 ** frac
    qx = np.floor(x) if floor_shift else np.floor(x + 0.5)
    qx = np.clip(qx, -m, m)
    e = qx * 2.0 ** -frac - s
    out.update({"clipped_frac": float(np.mean(s * 2.0 ** frac > m)), "err_rms": float(np.sqrt(np.mean(e * e))),
                "err_max": float(np.abs(e).max())})
    return out


def _layer_of(name: str) -> str:
    head = name.split(".")[0]
    return head if head.startswith("L") and head[1:].isdigit() else "top"


def quantize(graph, calib_ids, *, weight_bits: int = 8, percentile: float = 99.99, dtype=torch.float64,
             device="cpu", progress=None, per_channel: bool = True):
    """Float Graph + calibration ids [B, T] → (quantized Graph, report dict). `per_channel`: per-row
    weight scales folded into the neurons (docs/fixed_point.md §2.1; NeuronSpark only)."""
    if not (isinstance(weight_bits, int) and 2 <= weight_bits <= 8):
        raise UserError(f"weight bits must be an integer in 2..8, got {weight_bits!r}")
    if graph.quantized:
        raise ValueError("graph is already quantized")
    if graph.meta.get("shape_only"):
        raise UserError("cannot quantize a shape-only graph (no weights)")
    if graph.family == "nord":                 # docs/fixed_point.md §7 (ns_compile.quant.nord)
        from ns_compile.quant.nord import quantize_nord
        return quantize_nord(graph, calib_ids, weight_bits=weight_bits, percentile=percentile, dtype=dtype,
                             device=device, progress=progress)
    ids = torch.as_tensor(calib_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.numel() == 0:
        raise UserError("the calibration input is empty")
    from ns_compile.quant.calibrate import batch_rows
    rec = run_calibration(graph, batch_rows(ids), dtype=dtype, device=device)
    luts = build_luts()
    b = weight_bits

    qg = copy.copy(graph)
    qg.populations = {}
    qg.synapses = {}
    qg.host_ops = {}
    qg.meta = dict(graph.meta)
    qg.meta["luts"] = luts
    qg.meta["activity"] = rec.activity
    qg.meta["weight_bits"] = b
    qg.meta["per_channel"] = bool(per_channel)
    qg.quantized = True

    report = {"weight_bits": b, "percentile": percentile, "per_channel": bool(per_channel),
              "calibration_tokens": int(ids.numel()),
              "calibration_shape": list(ids.shape), "populations": {}, "synapses": {}, "host_ops": {},
              "overflow": []}

    # ---- populations: fracs of state, ports, payload -------------------------------------------
    fmts: dict[str, dict] = {}
    for name, p in graph.populations.items():
        f: dict[str, int] = {}
        acts = {}
        if p.kind == "plif_static":
            pb = int(p.meta.get("payload_bits", 16))
            th = float(np.abs(p.params["TH"]).max())
            r_state = max(rec.max(f"V:{name}") + th, rec.max(f"port:{name}.I"), th)
            f["V"] = f["I"] = frac_for(r_state * STATE_MARGIN, 24)
            f["P"] = min(f["V"], frac_for(rec.pct(f"V:{name}", percentile), pb))
            f["payload_bits"] = pb
            acts = {"V": _act(rec, f"V:{name}", f["V"], 24), "I": _act(rec, f"port:{name}.I", f["V"], 24),
                    "P": _act(rec, f"V:{name}", f["P"], pb, floor_shift=True)}
        elif p.kind == "plif_selective":
            pb = int(p.meta.get("payload_bits", 16))
            bias = {"XB": "BB", "XA": "BA", "XT": "BT"}
            f["I"] = frac_for(rec.max(f"port:{name}.I") * STATE_MARGIN, 24)
            for port, bk in bias.items():
                r = rec.max(f"port:{name}.{port}") + float(np.abs(p.params[bk]).max())
                f[port] = frac_for(r * STATE_MARGIN, 24)
            r_state = max(rec.max(f"V:{name}") + rec.max(f"T:{name}"), rec.max(f"U:{name}"))
            f["V"] = frac_for(r_state * STATE_MARGIN, 24)
            f["P"] = min(f["V"], frac_for(rec.pct(f"V:{name}", percentile), pb))
            f["payload_bits"] = pb
            acts = {"V": _act(rec, f"V:{name}", f["V"], 24), "P": _act(rec, f"V:{name}", f["P"], pb, True),
                    "U": _act(rec, f"U:{name}", f["V"], 24)}
            for port in ("I", "XB", "XA", "XT"):
                acts[port] = _act(rec, f"port:{name}.{port}", f[port], 24)
        elif p.kind == "gated_readout":
            for port in ("R", "G", "Q"):
                f[port] = frac_for(rec.max(f"port:{name}.{port}") * STATE_MARGIN, 24)
                acts[port] = _act(rec, f"port:{name}.{port}", f[port], 24)
            f["F"] = f["P"] = frac_for(rec.max(f"out:{name}") * STATE_MARGIN, 24)
            f["payload_bits"] = 24
            acts["F"] = _act(rec, f"out:{name}", f["F"], 24, True)
        elif p.kind == "accumulate":
            f["A"] = f["F"] = f["P"] = frac_for(max(rec.max(f"out:{name}"), rec.max(f"port:{name}.A")) * STATE_MARGIN, 24)
            f["payload_bits"] = 24
            acts["F"] = _act(rec, f"out:{name}", f["F"], 24)
        fmts[name] = f
        report["populations"][name] = {"kind": p.kind, "fmt": f, "activations": acts}
    # products: their fracs follow from their inputs (§3.4)
    for name, p in graph.populations.items():
        if p.kind != "product":
            continue
        d = {dd.dst_port: dd.src for dd in graph.directs_into(name)}
        f1, f2 = fmts[d["X1"]], fmts[d["X2"]]
        pb = int(p.meta.get("payload_bits", 16))
        exp = max(0, (f1["payload_bits"] - 1) + (f2["payload_bits"] - 1) - (pb - 1))
        f = {"X1": f1["P"], "X2": f2["P"], "exp": exp, "P": f1["P"] + f2["P"] - exp, "payload_bits": pb}
        fmts[name] = f
        report["populations"][name] = {"kind": p.kind, "fmt": f,
                                       "activations": {"P": _act(rec, f"out:{name}", f["P"], pb, True)}}

    # ---- population parameters -------------------------------------------------------------------
    for name, p in graph.populations.items():
        np_ = copy.copy(p)
        np_.fmt = fmts[name]
        np_.meta = dict(p.meta)
        f = fmts[name]
        if p.kind == "plif_static":
            np_.params = {"B": np.clip(q(p.params["B"], 12), 0, 4096),
                          "TH": sat_np(q(p.params["TH"], f["V"]), 24)}
        elif p.kind == "plif_selective":
            np_.params = {"BB": sat_np(q(p.params["BB"], f["XB"]), 24), "BA": sat_np(q(p.params["BA"], f["XA"]), 24),
                          "BT": sat_np(q(p.params["BT"], f["XT"]), 24),
                          "VTHMIN": sat_np(q(p.params["VTHMIN"], f["V"]), 24)}
        elif p.kind == "product":
            np_.params = {"exp": np.array([f["exp"]], dtype=np.int64)}
        else:
            np_.params = {}
        qg.populations[name] = np_

    # ---- synapse groups ------------------------------------------------------------------------------
    fws = {name: choose_weight_frac(np.asarray(s.weight), b) for name, s in graph.synapses.items()}
    row_shift = _choose_row_shifts(graph, fmts, fws, b, qg) if per_channel else {}
    w_err2 = [0.0, 0.0, 0]                     # Σ e² with, without per-channel; count
    for name, s in graph.synapses.items():
        w = np.asarray(s.weight)
        fw = fws[name]
        r = row_shift.get((s.dst, s.dst_port))
        M = (qm(w, fw, b) if r is None else _pc.quantize_rows(w, fw, r, b)).astype(np.int8 if b <= 8 else np.int16)
        src = fmts[s.src]
        dst = fmts[s.dst]
        fS = src["P"]
        fA = dst[s.dst_port] if s.dst_port in dst else dst["V"]
        ns = copy.copy(s)
        ns.weight = M
        ns.fmt = {"bits": b, "f_W": fw, "f_S": fS, "f_A": fA}
        ns.meta = dict(s.meta)
        qg.synapses[name] = ns
        err = _weight_error(w, M, fw if r is None else fw + r[:, None], b)
        if per_channel:                        # the same group without per-row scales (report only)
            base = _weight_error(w, qm(w, fw, b), fw, b)
            rr = np.zeros(M.shape[0], dtype=np.int64) if r is None else r
            err["row_shift"] = {"mean": round(float(rr.mean()), 4) if rr.size else 0.0, "max": int(rr.max(initial=0)),
                                "rows_shifted": round(float(np.mean(rr > 0)), 4) if rr.size else 0.0}
            err["per_tensor"] = {k: base[k] for k in ("err_rms", "rel_err_rms", "clipped_frac", "err_max")}
            w_err2[0] += err["err_rms"] ** 2 * w.size
            w_err2[1] += base["err_rms"] ** 2 * w.size
            w_err2[2] += w.size
        # accumulator bounds: worst case over every input the payload width allows, and calibrated
        smax = (1 << (src["payload_bits"] - 1)) - 1
        l1 = np.abs(M.astype(np.int64)).sum(axis=1) if M.size else np.zeros(1, dtype=np.int64)
        row_l1 = l1.max()
        acc_worst = int(row_l1) * smax * (1 << (9 - b))
        a_shift = fA - (fw + fS + 9 - b)
        # §2.1: row i reaches the port at f_A after the neuron's >> r_i
        a_worst = (acc_worst if r is None else float((l1 * 2.0 ** -r).max()) * smax * (1 << (9 - b))) * 2.0 ** a_shift
        r_max = 0 if r is None else int(r.max(initial=0))
        acc_cal = rec.max(f"syn:{name}") * 2.0 ** (fw + r_max + fS + 9 - b)
        a_cal = rec.max(f"syn:{name}") * 2.0 ** fA
        ent = {"bits": b, "f_W": fw, "f_S": fS, "f_A": fA, "weight_exp": ns.weight_exp(), **err,
               "acc_worst_log2": round(math.log2(acc_worst), 2) if acc_worst > 0 else None,
               "acc_calib_log2": round(math.log2(acc_cal), 2) if acc_cal > 0 else None,
               "A_calib_log2": round(math.log2(a_cal), 2) if a_cal > 0 else None,
               "A": _act(rec, f"syn:{name}", fA, 24)}
        report["synapses"][name] = ent
        for what, val, lim, worst in (("int32 accumulator", acc_worst, 2 ** 31 - 1, True),
                                      ("24-bit A", a_worst, 2 ** 23 - 1, True),
                                      ("int32 accumulator", acc_cal, 2 ** 31 - 1, False),
                                      ("24-bit A", a_cal, 2 ** 23 - 1, False)):
            if val > lim:
                report["overflow"].append({"group": name, "what": what, "case": "worst" if worst else "calibration",
                                           "factor": round(val / lim, 3)})

    if per_channel and w_err2[2]:
        report["per_channel_summary"] = {
            "ports": len(row_shift), "weight_err_rms": math.sqrt(w_err2[0] / w_err2[2]),
            "weight_err_rms_per_tensor": math.sqrt(w_err2[1] / w_err2[2])}

    # ---- host ops --------------------------------------------------------------------------------------
    h_max = max([rec.max(k) for k in rec.stats if k.startswith("host:") and k.endswith(".H")] + [1e-9])
    fH = frac_for(h_max * STATE_MARGIN, 24)
    report["f_H"] = fH
    E_int = sat_np(q(graph.host_ops["embed"].params["E"], fH), 24) if "embed" in graph.host_ops else None
    for name, op in graph.host_ops.items():
        no = copy.copy(op)
        no.meta = dict(op.meta)
        no.meta["quantized"] = True
        P = op.params
        ent = {"kind": op.kind}
        if op.kind == "embedding":
            no.params = {"E": E_int}
            no.fmt = {"f_H": fH}
            ent["E"] = _weight_error(P["E"], E_int, fH, 24)
        elif op.kind == "rmsnorm_drive":
            fG = frac_for(float(np.abs(P["G"]).max()), HOST_BITS)
            G = qm(P["G"], fG, HOST_BITS)
            no.params = {"G": G}
            no.fmt = {"f_X": fH, "f_G": fG, "f_out": fmts[op.meta["target"]]["V"]}
            ent["G"] = _weight_error(P["G"], G, fG, HOST_BITS)
            ent["drive"] = _act(rec, f"host:{name}.drive", no.fmt["f_out"], 24)
        elif op.kind == "ponder_residual":
            st = graph.stage(op.meta["stage"])
            fF = fmts[st.readout]["F"]
            fWH = frac_for(float(np.abs(P["WH"]).max()), HOST_BITS)
            fWO = frac_for(float(np.abs(P["WO"]).max()), HOST_BITS)
            WH, WO = qm(P["WH"], fWH, HOST_BITS), qm(P["WO"], fWO, HOST_BITS)
            no.params = {"WH": WH, "BH": q(P["BH"], fF + fWH), "WO": WO, "LUT_sigmoid": luts["sigmoid"]}
            no.fmt = {"f_F": fF, "f_WH": fWH, "f_WO": fWO, "f_H": fH}
            ent.update({"WH": _weight_error(P["WH"], WH, fWH, HOST_BITS), "WO": _weight_error(P["WO"], WO, fWO, HOST_BITS),
                        "H": _act(rec, f"host:{name}.H", fH, 24), "AGG": _act(rec, f"host:{name}.AGG", fF, 24)})
        elif op.kind == "decode":
            fO = fmts[graph.stage(op.meta["stage"]).readout]["P"]
            fWD = frac_for(float(np.abs(P["WD"]).max()), HOST_BITS)
            fZ = frac_for(max(rec.max(f"host:{name}.Z"), float(np.abs(P["BD"]).max())) * STATE_MARGIN, 24)
            fG = frac_for(float(np.abs(P["G"]).max()), HOST_BITS)
            fY = frac_for(rec.max(f"host:{name}.Y") * STATE_MARGIN, 24)
            WD, G = qm(P["WD"], fWD, HOST_BITS), qm(P["G"], fG, HOST_BITS)
            no.params = {"WD": WD, "BD": sat_np(q(P["BD"], fZ), 24), "G": G}
            no.fmt = {"f_O": fO, "f_WD": fWD, "f_Z": fZ, "f_G": fG, "f_Y": fY}
            ent.update({"WD": _weight_error(P["WD"], WD, fWD, HOST_BITS), "G": _weight_error(P["G"], G, fG, HOST_BITS),
                        "Z": _act(rec, f"host:{name}.Z", fZ, 24), "Y": _act(rec, f"host:{name}.Y", fY, 24)})
        elif op.kind == "lm_head":
            dec = next(o for o in graph.host_ops.values() if o.kind == "decode")
            no.params = {"E": E_int}
            no.fmt = {"f_H": fH, "f_Y": None}
            no.meta["decode_op"] = dec.name
            no.meta["E_max"] = int(np.abs(E_int).max())
        else:
            no.params = {}
            no.fmt = {}
        if no.fmt:
            ent["fmt"] = no.fmt
        qg.host_ops[name] = no
        report["host_ops"][name] = ent
    for op in qg.host_ops.values():
        if op.kind == "lm_head":
            op.fmt["f_Y"] = qg.host_ops[op.meta["decode_op"]].fmt["f_Y"]
            report["host_ops"][op.name]["fmt"] = op.fmt
    qg.validate()
    report["layers"] = _per_layer(report)
    return qg, report


def _choose_row_shifts(graph, fmts: dict, fws: dict, b: int, qg) -> dict:
    """docs/fixed_point.md §2.1: RS per synapse-fed port of the NeuronSpark neuron types (not a port
    the host drives). Stores RS_<port> (uint8) in the quantized populations' params; returns
    {(population, port): r}."""
    driven = {(t, "I") for st in graph.stages for t in st.drive_targets}
    ports: dict[tuple, list] = {}
    for name, s in graph.synapses.items():
        ports.setdefault((s.dst, s.dst_port), []).append(name)
    out = {}
    for (pop, port), names in ports.items():
        p = graph.populations[pop]
        if p.kind not in _pc.PER_CHANNEL_KINDS or (pop, port) in driven:
            continue
        if any(graph.synapses[n].src.startswith("host:") for n in names):
            continue
        dst = fmts[pop]
        fA = dst[port] if port in dst else dst["V"]
        groups = []
        for n in names:
            s = graph.synapses[n]
            src = fmts[s.src]
            fw = fws[n]
            groups.append(_pc.GroupInfo(np.asarray(s.weight), fw, b, (1 << (src["payload_bits"] - 1)) - 1,
                                        fA - (fw + src["P"] + 9 - b)))
        r = _pc.port_row_shifts(groups)
        out[(pop, port)] = r
        qp = qg.populations[pop]
        qp.params = {**qp.params, _pc.rs_key(port): r.astype(np.uint8)}
    return out


def _per_layer(report: dict) -> dict:
    layers: dict[str, dict] = {}
    for name, e in report["synapses"].items():
        L = layers.setdefault(_layer_of(name), {"groups": 0, "max_rel_err_rms": 0.0, "max_clipped_frac": 0.0,
                                                 "overflow_worst": 0, "overflow_calib": 0})
        L["groups"] += 1
        L["max_rel_err_rms"] = max(L["max_rel_err_rms"], e["rel_err_rms"])
        L["max_clipped_frac"] = max(L["max_clipped_frac"], e["clipped_frac"])
    for o in report["overflow"]:
        L = layers.setdefault(_layer_of(o["group"]), {"groups": 0, "max_rel_err_rms": 0.0, "max_clipped_frac": 0.0,
                                                       "overflow_worst": 0, "overflow_calib": 0})
        L["overflow_worst" if o["case"] == "worst" else "overflow_calib"] += 1
    for name, e in report["populations"].items():
        L = layers.setdefault(_layer_of(name), {"groups": 0, "max_rel_err_rms": 0.0, "max_clipped_frac": 0.0,
                                                 "overflow_worst": 0, "overflow_calib": 0})
        for a in e["activations"].values():
            L["max_act_clipped_frac"] = max(L.get("max_act_clipped_frac", 0.0), a.get("clipped_frac", 0.0))
    return layers


def format_report(report: dict, *, max_lines: int = 60) -> str:
    """A human-readable summary of the calibration report (printed by `compile`)."""
    lines = [f"quantization: {report['weight_bits']}-bit weights, payload frac by the {report['percentile']}th "
             f"percentile, calibration {report['calibration_tokens']} tokens, f_H={report['f_H']}"]
    lines.append(f"{'layer':<6} {'groups':>6} {'max rel.err(W)':>15} {'max clipped W':>14} {'max clipped act':>16} "
                 f"{'ovf worst':>9} {'ovf calib':>9}")
    for name, L in report["layers"].items():
        lines.append(f"{name:<6} {L['groups']:>6} {L['max_rel_err_rms']:>15.4f} {L['max_clipped_frac']:>14.2e} "
                     f"{L.get('max_act_clipped_frac', 0.0):>16.2e} {L['overflow_worst']:>9} {L['overflow_calib']:>9}")
    pcs = report.get("per_channel_summary")
    if pcs:
        rs = [e["row_shift"] for e in report["synapses"].values() if "row_shift" in e]
        lines.append(f"per-channel weight scales (§2.1): {pcs['ports']} ports, mean r "
                     f"{np.mean([x['mean'] for x in rs]):.2f}, max r {max(x['max'] for x in rs)}; weight RMS error "
                     f"{pcs['weight_err_rms']:.3e} (per-tensor {pcs['weight_err_rms_per_tensor']:.3e})")
    elif report.get("per_channel") is False:
        lines.append("per-channel weight scales: off (--no-per-channel)")
    cal = [o for o in report["overflow"] if o["case"] == "calibration"]
    worst = [o for o in report["overflow"] if o["case"] == "worst"]
    lines.append(f"accumulators that can overflow: {len(worst)} worst-case, {len(cal)} seen in calibration")
    for o in (cal + worst)[: max(0, max_lines - len(lines))]:
        lines.append(f"  {o['group']}: {o['what']} exceeds its range by ×{o['factor']} ({o['case']})")
    if "sparsity" in report:                   # Nord: measured spike rates per population
        from ns_compile.quant.nord import format_sparsity
        lines.append(format_sparsity(report))
    return "\n".join(lines)
