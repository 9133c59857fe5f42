"""Quantization of a Nord float IR graph (docs/fixed_point.md §7), with the calibration report.

Calibration runs the float IR interpreter (ns_compile.sim.nord) on the calibration ids, split into
rows of at most `max_seq_len` (≤ 128) positions (Nord rows attend within themselves only). Fracs:

- lif_nord: one f_V for U, V, ports I and C: max |U|, |Ṽ|, |V|, |θ|, |v_reset| over the calibration
  with a 2× margin (24-bit); payload = binary spikes (f_P = 0);
- residual stream X: one f_X for the whole model (max over every X the host produced, and 1 for
  the input spikes, 2× margin, 24-bit);
- LayerNorm outputs (payloads of the host-fed groups / the LM head input): 16-bit, frac by max;
- value means VB: 24-bit by max with margin; host matrices and gains 16-bit mantissas (§1);
- synapse groups: b-bit mantissas, MSE frac search (ns_compile.quant.choose_weight_frac).

The measured spike rate of every population goes to graph.meta["activity"] (the partitioner's
event-driven traffic) and to the report ("sparsity").
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ns_compile.errors import UserError

V4_INTEGER = True


def _rows(ids: torch.Tensor, max_len: int) -> torch.Tensor:
    """A single long calibration sequence [1, T] as equal rows of ≤ max_len positions."""
    if ids.shape[0] != 1 or ids.shape[1] <= max_len:
        return ids
    n = ids.shape[1] // max_len
    return ids[:, :n * max_len].reshape(n, max_len)


def quantize_nord(graph, calib_ids, *, weight_bits: int = 8, percentile: float = 99.99, dtype=torch.float64,
                  device="cpu", progress=None):
    from ns_compile.lower.nord import ln_frac_r, ln_shift
    from ns_compile.quant import (HOST_BITS, STATE_MARGIN, _act, _weight_error, choose_weight_frac, frac_for, q, qm,
                                  sat_np)
    from ns_compile.quant.calibrate import Recorder
    from ns_compile.sim.nord import NordEmulator
    from ns_compile.sim.nord_host import exp_table

    if graph.config.get("version") == "v4" and not V4_INTEGER:
        raise UserError("Nord v4 lowering is not supported yet for `compile` (the float IR and `plan` work; the "
                        "integer v4 host ops are not written)")
    b = weight_bits
    ids = torch.as_tensor(calib_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.numel() == 0:
        raise UserError("the calibration input is empty")
    ids = _rows(ids, min(int(graph.config.get("max_seq_len", 128)), 128))
    rec = Recorder(0)
    emu = NordEmulator(graph, device=device, dtype=dtype, recorder=rec)
    with torch.inference_mode():
        emu.forward(ids)
    activity = emu.activity()
    cfg = graph.config
    K = int(cfg["K"])
    D = int(cfg["D"])

    qg = copy.copy(graph)
    qg.populations, qg.synapses, qg.host_ops = {}, {}, {}
    qg.meta = dict(graph.meta)
    qg.meta["activity"] = activity
    qg.meta["weight_bits"] = b
    qg.quantized = True
    report = {"family": "nord", "weight_bits": b, "percentile": percentile, "calibration_tokens": int(ids.numel()),
              "calibration_shape": list(ids.shape), "populations": {}, "synapses": {}, "host_ops": {},
              "overflow": [], "sparsity": {}}

    # ---- populations ----------------------------------------------------------------------------
    fmts = {}
    for name, p in graph.populations.items():
        th = float(np.abs(p.params["TH"]).max())
        vr = abs(float(np.asarray(p.params["VRESET"]).reshape(-1)[0]))
        r = max(rec.max(f"V:{name}"), rec.max(f"Vt:{name}"), rec.max(f"U:{name}"), th, vr)
        fV = frac_for(r * STATE_MARGIN, 24)
        f = {"V": fV, "I": fV, "C": fV, "P": 0, "payload_bits": 1}
        fmts[name] = f
        np_ = copy.copy(p)
        np_.fmt = f
        np_.meta = dict(p.meta)
        np_.params = {"BS": np.clip(q(p.params["BS"], 12), 0, 4096), "BM": np.clip(q(p.params["BM"], 12), 0, 4096),
                      "TH": sat_np(q(p.params["TH"], fV), 24), "VRESET": sat_np(q(p.params["VRESET"], fV), 24),
                      "RT": np.clip(np.asarray(p.params["RT"], dtype=np.int64).reshape(-1), 0, 3)}
        qg.populations[name] = np_
        rate = activity.get(name, 0.0)
        report["sparsity"][name] = {"neurons": p.size, "spike_rate": rate, "sparsity": round(1.0 - rate, 6)}
        report["populations"][name] = {
            "kind": p.kind, "fmt": f, "spike_rate": rate,
            "activations": {"V": _act(rec, f"V:{name}", fV, 24), "Vt": _act(rec, f"Vt:{name}", fV, 24),
                            "U": _act(rec, f"U:{name}", fV, 24), "I": _act(rec, f"port:{name}.I", fV, 24),
                            "C": _act(rec, f"port:{name}.C", fV, 24)}}
    tot_n = sum(p.size for p in graph.populations.values())
    report["mean_spike_rate"] = round(sum(activity.get(n, 0.0) * p.size for n, p in graph.populations.items())
                                      / max(tot_n, 1), 6)

    # ---- host fracs ----------------------------------------------------------------------------------
    x_max = max([rec.max(k) for k in rec.stats if k.startswith("host:") and k.endswith(".X")] + [1.0])
    fX = max(0, frac_for(x_max * STATE_MARGIN, 24))
    report["f_H"] = report["f_X"] = fX
    fY = {}
    for name, op in graph.host_ops.items():
        if op.kind == "nord_layernorm":
            fY[name] = frac_for(rec.max(f"host:{name}.Y"), 16)
        elif op.kind == "nord_readout":
            fY[name] = frac_for(rec.max(f"host:{name}.Y"), 16)
        elif op.kind == "nord4_payload":
            fY[name] = frac_for(rec.max(f"host:{name}.Y"), 16)

    def ln_fmt(P, f_in):
        fG = frac_for(float(np.abs(P["G"]).max()), HOST_BITS)
        s = ln_shift(D)
        fR = ln_frac_r(D, f_in)
        if fR + f_in - s < 16:
            raise UserError(f"LayerNorm input frac {f_in} too small for the integer rule (f_R + f_X − s < 16)")
        return fG, s, fR

    for name, op in graph.host_ops.items():
        no = copy.copy(op)
        no.meta = dict(op.meta)
        no.meta["quantized"] = True
        P = op.params
        ent = {"kind": op.kind}
        k = op.kind
        if k == "nord_encoder":
            fE = frac_for(float(np.abs(P["E"]).max()), 24)
            fG = frac_for(float(np.abs(P["G"]).max()), HOST_BITS)
            E = sat_np(q(P["E"], fE), 24).astype(np.int32)
            G = qm(P["G"], fG, HOST_BITS)
            no.params = {"E": E, "G": G}
            no.fmt = {"f_E": fE, "f_G": fG, "f_V": fmts[op.meta["target"]]["V"]}
            ent.update({"E": _weight_error(P["E"], E, fE, 24), "G": _weight_error(P["G"], G, fG, HOST_BITS),
                        "drive": _act(rec, f"host:{name}.drive", no.fmt["f_V"], 24)})
        elif k == "nord_spike_residual":
            no.fmt = {"f_X": fX}
        elif k == "nord_layernorm":
            fG, s, fR = ln_fmt(P, fX)
            G = qm(P["G"], fG, HOST_BITS)
            no.params = {"G": G, "BY": q(P["BY"], fY[name])}
            no.fmt = {"f_X": fX, "f_G": fG, "f_Y": fY[name], "s": s, "f_R": fR}
            ent.update({"G": _weight_error(P["G"], G, fG, HOST_BITS), "Y": _act(rec, f"host:{name}.Y", fY[name], 16)})
        elif k == "nord_attention":
            fWV = frac_for(float(np.abs(P["WV"]).max()), HOST_BITS)
            fWO = frac_for(float(np.abs(P["WO"]).max()), HOST_BITS)
            fVB = frac_for(rec.max(f"host:{name}.VB") * STATE_MARGIN, 24)
            WV, WO = qm(P["WV"], fWV, HOST_BITS), qm(P["WO"], fWO, HOST_BITS)
            tau = float(P["TAU"][0])
            Dh = D // int(op.meta["heads"])
            no.params = {"WV": WV, "WO": WO, "EXP": exp_table(tau, K * Dh),
                         "SGN": np.array([int(np.sign(tau))], dtype=np.int64)}
            no.fmt = {"f_X": fX, "f_Y": fY[op.meta["norm"]], "f_WV": fWV, "f_VB": fVB, "f_WO": fWO}
            ent.update({"WV": _weight_error(P["WV"], WV, fWV, HOST_BITS), "WO": _weight_error(P["WO"], WO, fWO, HOST_BITS),
                        "VB": _act(rec, f"host:{name}.VB", fVB, 24), "X": _act(rec, f"host:{name}.X", fX, 24)})
        elif k == "nord_ffn_residual" and op.meta.get("relu"):        # v4 executive: ReLU, no clamp params
            no.params = {"GF": sat_np(q(P["GF"], fX), 24)}
            no.fmt = {"f_X": fX}
            ent["X"] = _act(rec, f"host:{name}.X", fX, 24)
        elif k.startswith("nord4_"):                                     # docs/fixed_point.md §7.5
            no.params, no.fmt = _quant_v4(op, P, rec, fX, fY, fmts, ent, K, D)
        elif k == "nord_ffn_residual":
            no.params = {"GF": sat_np(q(P["GF"], fX), 24), "LEAK": np.clip(q(P["LEAK"], 16), 0, 65536),
                         "FL": sat_np(q(P["FLOOR"], fX), 24)}
            no.fmt = {"f_X": fX}
            ent["X"] = _act(rec, f"host:{name}.X", fX, 24)
        elif k == "nord_gain_drive":
            fG = frac_for(float(np.abs(P["G"]).max()), HOST_BITS)
            G = qm(P["G"], fG, HOST_BITS)
            no.params = {"G": G}
            no.fmt = {"f_X": fX, "f_G": fG, "f_V": fmts[op.meta["target"]]["V"]}
        elif k == "nord_readout":
            fV = fmts[graph.stage(op.meta["stage"]).readout]["V"]
            fG, s, fR = ln_fmt(P, fV)
            a = float(P["A"][0])
            G = qm(P["G"], fG, HOST_BITS)
            no.params = {"AE": q(np.array([a]), 16), "AC": q(np.array([1.0 - a]), 16), "G": G,
                         "BY": q(P["BY"], fY[name])}
            no.fmt = {"f_V": fV, "f_G": fG, "f_Y": fY[name], "s": s, "f_R": fR}
            ent.update({"R": _act(rec, f"host:{name}.R", fV, 24), "Y": _act(rec, f"host:{name}.Y", fY[name], 16)})
        elif k == "nord_lm_head":
            fW = frac_for(float(np.abs(P["W"]).max()), HOST_BITS)
            Wm = qm(P["W"], fW, HOST_BITS).astype(np.int16)
            ro = next(o for o in graph.host_ops.values() if o.kind == "nord_readout")
            no.params = {"W": Wm}
            no.fmt = {"f_W": fW, "f_Y": fY[ro.name]}
            no.meta["W_max"] = int(np.abs(Wm).max())
            ent["W"] = _weight_error(P["W"], Wm, fW, HOST_BITS)
        else:
            no.params, no.fmt = {}, {}
        if no.fmt:
            ent["fmt"] = no.fmt
        qg.host_ops[name] = no
        report["host_ops"][name] = ent

    # ---- synapse groups ----------------------------------------------------------------------------
    for name, s in graph.synapses.items():
        w = np.asarray(s.weight)
        fw = choose_weight_frac(w, b)
        M = qm(w, fw, b).astype(np.int8)
        if s.src.startswith("host:"):
            fS, smax = qg.host_ops[s.src[5:]].fmt["f_Y"], (1 << 15) - 1
        else:
            fS, smax = 0, 1
        fA = fmts[s.dst][s.dst_port]
        ns = copy.copy(s)
        ns.weight = M
        ns.fmt = {"bits": b, "f_W": fw, "f_S": fS, "f_A": fA}
        ns.meta = dict(s.meta)
        qg.synapses[name] = ns
        err = _weight_error(w, M, fw, b)
        if s.input_kind == "binary":
            row = np.maximum(np.where(M > 0, M, 0).sum(1), -np.where(M < 0, M, 0).sum(1)).max() if M.size else 0
        else:
            row = np.abs(M.astype(np.int64)).sum(axis=1).max() if M.size else 0
        acc_worst = int(row) * smax * (1 << (9 - b))
        a_worst = acc_worst * 2.0 ** (fA - (fw + fS + 9 - b))
        a_cal = rec.max(f"syn:{name}") * 2.0 ** fA
        report["synapses"][name] = {"bits": b, "f_W": fw, "f_S": fS, "f_A": fA, "weight_exp": ns.weight_exp(),
                                    "input_kind": s.input_kind, **err,
                                    "acc_worst_log2": round(math.log2(acc_worst), 2) if acc_worst > 0 else None,
                                    "A": _act(rec, f"syn:{name}", fA, 24)}
        for what, val, lim, case in (("int32 accumulator", acc_worst, 2 ** 31 - 1, "worst"),
                                     ("24-bit A", a_worst, 2 ** 23 - 1, "worst"),
                                     ("24-bit A", a_cal, 2 ** 23 - 1, "calibration")):
            if val > lim:
                report["overflow"].append({"group": name, "what": what, "case": case, "factor": round(val / lim, 3)})
    qg.validate()
    report["layers"] = _per_layer(report)
    return qg, report


F_TM, F_T, F_SC_ATT, F_SC_MOE, F_SC_MEM = 14, 14, 16, 24, 16


def _quant_v4(op, P, rec, fX, fY, fmts, ent, K, D):
    """Params + fmt of the Nord v4.2 host ops (docs/fixed_point.md §7.5)."""
    from ns_compile.lower.nord import ln_frac_r, ln_shift
    from ns_compile.quant import HOST_BITS, STATE_MARGIN, _act, _weight_error, frac_for, q, qm, sat_np
    from ns_compile.sim.nord_host_v4 import exp_lut
    name, k = op.name, op.kind
    if k == "nord4_payload":
        return {}, {"f_X": fX, "f_Y": fY[name]}
    if k == "nord4_attention":
        fWV = frac_for(float(np.abs(P["WV"]).max()), HOST_BITS)
        fWO = frac_for(float(np.abs(P["WO"]).max()), HOST_BITS)
        fVB = frac_for(rec.max(f"host:{name}.VB") * STATE_MARGIN, 24)
        fTE = frac_for(abs(float(P["TEMP"][0])), HOST_BITS)
        WV, WO = qm(P["WV"], fWV, HOST_BITS), qm(P["WO"], fWO, HOST_BITS)
        par = {"WV": WV, "WO": WO, "WQ": q(P["WQ"], F_TM), "WK": q(P["WK"], F_TM), "COS": q(P["COS"], F_T),
               "SIN": q(P["SIN"], F_T), "TEMP": qm(P["TEMP"], fTE, HOST_BITS), "EXPL": exp_lut()}
        ent.update({"WV": _weight_error(P["WV"], WV, fWV, HOST_BITS), "WO": _weight_error(P["WO"], WO, fWO, HOST_BITS),
                    "VB": _act(rec, f"host:{name}.VB", fVB, 24), "X": _act(rec, f"host:{name}.X", fX, 24)})
        return par, {"f_X": fX, "f_Y": fY[op.meta["norm"]], "f_WV": fWV, "f_VB": fVB, "f_WO": fWO, "f_TM": F_TM,
                     "f_T": F_T, "f_TEMP": fTE, "f_SC": F_SC_ATT}
    if k == "nord4_moe_gate":
        par = {"EXPERT": np.asarray(P["EXPERT"], dtype=np.int64), "A": q(P["A"], F_SC_MOE),
               "BIAS": q(P["BIAS"], F_SC_MOE), "EXPL": exp_lut()}
        return par, {"f_SC": F_SC_MOE, "f_Y": fY[op.meta["norm"]]}
    if k == "nord4_moe_residual":
        fGF = frac_for(float(np.abs(P["GF"]).max()), HOST_BITS)
        ent["X"] = _act(rec, f"host:{name}.X", fX, 24)
        return ({"GF": qm(P["GF"], fGF, HOST_BITS), "LEAK": np.clip(q(P["LEAK"], 16), 0, 65536),
                 "FL": sat_np(q(P["FLOOR"], fX), 24)}, {"f_X": fX, "f_GF": fGF})
    if k == "nord4_memory":
        fV = fmts[op.meta["mem"]]["V"]
        fWA = frac_for(float(np.abs(P["WA"]).max()), HOST_BITS)
        fWF = frac_for(float(np.abs(P["WF"]).max()), HOST_BITS)
        fG = frac_for(float(np.abs(P["G"]).max()), HOST_BITS)
        fU = frac_for(rec.max(f"host:{name}.U") * STATE_MARGIN, 24)
        Mm = int(np.asarray(P["WF"]).shape[0])
        if ln_frac_r(Mm, fU) + fU - ln_shift(Mm) < 16:
            raise ValueError(f"{name}: LayerNorm input frac {fU} too small for the integer rule")
        Kf = K
        c = np.arange(Kf + 1, dtype=np.float64)
        gate = 1.0 / (1.0 + np.exp(-10.0 * (c / Kf - float(P["GTH"][0]))))
        par = {"WA": qm(P["WA"], fWA, HOST_BITS), "GATE": np.clip(q(gate, 16), 0, 65536),
               "WF": qm(P["WF"], fWF, HOST_BITS), "G": qm(P["G"], fG, HOST_BITS), "BY": sat_np(q(P["BY"], fX), 24),
               "EXPL": exp_lut()}
        ent.update({"U": _act(rec, f"host:{name}.U", fU, 24), "X": _act(rec, f"host:{name}.X", fX, 24)})
        return par, {"f_X": fX, "f_V": fV, "f_WA": fWA, "f_SC": F_SC_MEM, "f_WF": fWF, "f_U": fU, "f_G": fG}
    raise ValueError(f"unknown Nord v4 host op kind {k!r}")


def _layer(name: str) -> str:
    parts = name.split(".")
    return f"L{parts[1]}" if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else "top"


def _per_layer(report: dict) -> dict:
    layers: dict = {}

    def L(name):
        return layers.setdefault(_layer(name), {"groups": 0, "max_rel_err_rms": 0.0, "max_clipped_frac": 0.0,
                                                "overflow_worst": 0, "overflow_calib": 0})
    for name, e in report["synapses"].items():
        x = L(name)
        x["groups"] += 1
        x["max_rel_err_rms"] = max(x["max_rel_err_rms"], e["rel_err_rms"])
        x["max_clipped_frac"] = max(x["max_clipped_frac"], e["clipped_frac"])
    for o in report["overflow"]:
        L(o["group"])["overflow_worst" if o["case"] == "worst" else "overflow_calib"] += 1
    for name, e in report["populations"].items():
        x = L(name)
        for a in e["activations"].values():
            x["max_act_clipped_frac"] = max(x.get("max_act_clipped_frac", 0.0), a.get("clipped_frac", 0.0))
    return layers


def format_sparsity(report: dict) -> str:
    lines = [f"spike rates (calibration; mean {report.get('mean_spike_rate', 0):.4f}):"]
    for name, e in report.get("sparsity", {}).items():
        lines.append(f"  {name:<32} {e['neurons']:>7,} neurons  rate {e['spike_rate']:.4f}  sparsity {e['sparsity']:.4f}")
    return "\n".join(lines)
