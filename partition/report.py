"""Rendering of a PartitionResult: terminal table, JSON file, PNG plots (matplotlib Agg)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ns_compile.partition.tiling import BUDGETS


def _si(x, unit=""):
    if x is None:
        return "-"
    x = float(x)
    for f, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= f:
            return f"{x / f:.3g} {p}{unit}".strip()
    if 0 < abs(x) < 1e-3:
        for f, p in ((1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
            if abs(x) >= f:
                return f"{x / f:.3g} {p}{unit}".strip()
    return f"{x:.3g} {unit}".strip()


def render_table(res) -> str:
    j = res.to_json(include_map=False)
    m, n = j, j["naive"]
    rows = [
        ("chips used", m["chips_used"], n["chips_used"]),
        ("chips lower bound (tiles)", m["chips_lower_bound"], m["chips_lower_bound"]),
        ("chips lower bound (weights)", m["model_lower_bound"]["chips"], m["model_lower_bound"]["chips"]),
        ("cores used", m["cores_used"], n["cores_used"]),
        ("cores lower bound", m["cores_lower_bound"], m["cores_lower_bound"]),
        ("inter-chip msgs/token", _si(m["inter_chip_messages_per_token"]), _si(n["inter_chip_messages_per_token"])),
        ("inter-chip bits/token", _si(m["inter_chip_bits_per_token"], "b"), _si(n["inter_chip_bits_per_token"], "b")),
        ("inter-core msgs/token", _si(m["inter_core_messages_per_token"]), _si(n["inter_core_messages_per_token"])),
        ("inter-core bits/token", _si(m["inter_core_bits_per_token"], "b"), _si(n["inter_core_bits_per_token"], "b")),
        ("intra-core msgs/token", _si(m["intra_core_messages_per_token"]), _si(n["intra_core_messages_per_token"])),
        ("latency/token", _si(m["latency_s_per_token"], "s"), _si(n["latency_s_per_token"], "s")),
        ("energy/token", _si(m["energy_j_per_token"], "J"), _si(n["energy_j_per_token"], "J")),
    ]
    for b in BUDGETS:
        u, v = m["utilization"][b], n["utilization"][b]
        rows.append((f"util {b} mean/max", f"{u['mean']:.0%} / {u['max']:.0%}", f"{v['mean']:.0%} / {v['max']:.0%}"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(str(r[1])) for r in rows + [("", "METIS", "")])
    lines = [f"plan: {j['graph']['family']} on {j['profile']['name']} ({j['profile']['chips']} chips x "
             f"{j['profile']['cores_per_chip']} cores), {j['tiles']} tiles, weight bits {j['weight_bits']}",
             f"{'':<{w0}}  {'METIS':>{w1}}  naive fill", "-" * (w0 + w1 + 14)]
    lines += [f"{a:<{w0}}  {str(b):>{w1}}  {c}" for a, b, c in rows]
    lines.append("")
    lines.append(f"lower bound: {m['cores_lower_bound']} cores, binding budget {m['lower_bound_binding_budget']} "
                 f"(chips used / bound = {m['chips_used'] / max(m['chips_lower_bound'], 1):.3f})")
    eb = m["energy_j"]
    lines.append("energy/token: " + ", ".join(f"{k} {_si(v, 'J')}" for k, v in eb.items()))
    lat = m["latency"]
    lines.append(f"latency/token: {lat['stages']} stages, {lat['steps_per_token']:.0f} steps, step "
                 f"{_si(lat['step_s_min'], 's')}..{_si(lat['step_s_max'], 's')}, host round trips "
                 f"{_si(lat['host_round_trips_s'], 's')}, host link {_si(m['host']['host_link_s_per_token'], 's')}")
    h = m["host"]
    lines.append(f"host side: {h['counts']['host_cpu']} ops on the host CPU, {h['counts']['embedded_x86']} on "
                 f"embedded x86; host->chip {_si(h['host_to_chip_bits_per_token'], 'b')}/token, chip->host "
                 f"{_si(h['chip_to_host_bits_per_token'], 'b')}/token")
    kinds = {}
    for o in h["ops"]:
        kinds.setdefault((o["kind"], o["where"]), 0)
        kinds[(o["kind"], o["where"])] += 1
    lines.append("  " + "; ".join(f"{k} x{c} -> {w}" for (k, w), c in kinds.items()))
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in m["assumptions"]]
    lines.append(f"time: {m['timing_s']['total']:.1f} s (tiling {m['timing_s']['tiling']:.1f}, METIS placement "
                 f"{m['timing_s']['placement']:.1f}, naive {m['timing_s']['naive']:.1f})")
    return "\n".join(lines)


def write_report(res, out_dir: str | os.PathLike) -> list[str]:
    """plan.json, utilization CSV, core-utilization heatmap and chip-to-chip traffic PNGs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ns_compile.atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_path(out / "plan.json") as tmp:
        Path(tmp).write_text(json.dumps(res.to_json(include_map=True), indent=1) + "\n")
    written.append(str(out / "plan.json"))
    with atomic_path(out / "report.txt") as tmp:
        Path(tmp).write_text(render_table(res) + "\n")
    written.append(str(out / "report.txt"))

    for tag, ev in (("metis", res.metrics), ("naive", res.naive_metrics)):
        load = ev["core_utilization"]
        with atomic_path(out / f"core_utilization_{tag}.csv") as tmp:
            with open(tmp, "w") as f:
                f.write("chip,core," + ",".join(BUDGETS) + "\n")
                cpc = res.profile.cores_per_chip
                for cid, row in zip(ev["core_ids"], load):
                    f.write(f"{cid // cpc},{cid % cpc}," + ",".join(f"{x:.4f}" for x in row) + "\n")
        written.append(str(out / f"core_utilization_{tag}.csv"))

        cpc = res.profile.cores_per_chip
        chips = ev["chip_ids"]
        pos = {int(c): i for i, c in enumerate(chips)}
        fig, axes = plt.subplots(1, len(BUDGETS), figsize=(3.2 * len(BUDGETS), 1.5 + 0.02 * len(chips) + 2),
                                 squeeze=False)
        for b, ax in enumerate(axes[0]):
            img = np.full((len(chips), cpc), np.nan)
            for cid, row in zip(ev["core_ids"], load):
                img[pos[int(cid // cpc)], int(cid % cpc)] = row[b]
            im = ax.imshow(img, aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
            ax.set_title(BUDGETS[b].replace("_", " "), fontsize=9)
            ax.set_xlabel("core")
            if b == 0:
                ax.set_ylabel("chip")
        fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, label="utilization")
        fig.suptitle(f"core utilization ({tag}): {ev['cores_used']} cores on {ev['chips_used']} chips", fontsize=10)
        with atomic_path(out / f"core_utilization_{tag}.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(str(out / f"core_utilization_{tag}.png"))

        cm = ev["chip_matrix"]
        fig, ax = plt.subplots(figsize=(6, 5))
        with np.errstate(divide="ignore"):
            im = ax.imshow(np.log10(np.where(cm > 0, cm, np.nan)), cmap="magma", interpolation="nearest")
        ax.set_xlabel("destination chip")
        ax.set_ylabel("source chip")
        ax.set_title(f"chip-to-chip messages/token ({tag}), total {_si(cm.sum())}", fontsize=10)
        fig.colorbar(im, ax=ax, label="log10 messages/token")
        with atomic_path(out / f"chip_traffic_{tag}.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(str(out / f"chip_traffic_{tag}.png"))
    return written
