"""Rendering of comparison results: terminal table, JSON, and a self-contained HTML report.

The HTML report is one `index.html` plus PNG files next to it, referenced by relative names:
inline CSS, no scripts, no network. Plots are drawn with matplotlib's Agg backend.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import numpy as np

from ns_compile.verify.metrics import worst_first
from ns_compile.verify.trace import Trace


# ---- terminal ---------------------------------------------------------------------------------------

def _f(x, spec=".3g"):
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _div_text(d):
    if not d:
        return "none"
    fr = "after frames" if d.get("frame") is None else f"frame {d['frame']}"
    return f"{d.get('layer', d.get('population'))} token {d['token']} {fr} (row {d['row']})"


def pair_title(r: dict) -> str:
    return f"{r['a']} vs {r['b']}"


def format_table(results: list[dict], *, top: int = 12) -> str:
    lines = []
    for r in results:
        lines.append(f"== {pair_title(r)}  ({'integer' if r.get('integer') else 'float'} comparison)")
        head = [f"bit-exact: {'yes' if r['bit_exact'] else 'no'}",
                f"top-1 agreement: {_pct(r.get('top1_agreement'))}",
                f"KL: {_f(r.get('kl'))}"]
        if r.get("max_abs_logit_diff") is not None:
            head.append(f"max|Δlogit|: {_f(r['max_abs_logit_diff'])}")
        lines.append("   " + "   ".join(head))
        lines.append(f"   first divergence: {_div_text(r.get('first_divergence'))}")
        if r.get("greedy"):
            g = r["greedy"]
            lines.append(f"   greedy: {g['common_prefix']}/{len(g['tokens_a'])} tokens agree before the first difference")
        if r.get("perplexity"):
            p = r["perplexity"]
            lines.append(f"   perplexity ({p['source']}): {_f(p['a'], '.4g')} vs {_f(p['b'], '.4g')} "
                         f"({100 * p['rel_diff']:+.2f}%)")
        sat = r.get("saturation", {})
        if sat.get("a") or sat.get("b"):
            lines.append(f"   saturation events: {r['a']} {sat.get('a', 0)}, {r['b']} {sat.get('b', 0)}")
        rows = worst_first(r["layers"])[:top]
        cols = ["population", "max err", "rms err", "rel rms", "first div (tok,frm)", "spike agree", "hamming", "sat a/b"]
        table = [cols]
        for x in rows:
            d = x.get("first_divergent_frame")
            dv = "-" if not d else f"{d['token']},{'-' if d['frame'] is None else d['frame']}"
            sa, sb = (str(sum(x[k].values())) if x.get(k) else "-" for k in ("saturation_a", "saturation_b"))
            table.append([x["population"], _f(x.get("max_err")), _f(x.get("rms_err")), _f(x.get("rel_rms_err")), dv,
                          _pct(x.get("spike_agreement")), str(x.get("hamming", "-")), f"{sa}/{sb}"])
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        for j, row in enumerate(table):
            lines.append("   " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
            if j == 0:
                lines.append("   " + "  ".join("-" * w for w in widths))
        more = len(r["layers"]) - len(rows)
        if more > 0:
            lines.append(f"   ... {more} more populations (--json or --report for all)")
        lines.append("")
    return "\n".join(lines)


def to_json(results: list[dict], extra: dict | None = None) -> str:
    doc = {"pairs": results}
    if extra:
        doc.update(extra)
    return json.dumps(doc, indent=2, default=_json_default, allow_nan=False)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def sanitize(x):
    """Replace inf/nan (not valid JSON) by None, recursively."""
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return None
    if isinstance(x, dict):
        return {k: sanitize(v) for k, v in x.items()}
    if isinstance(x, list):
        return [sanitize(v) for v in x]
    return x


# ---- plots -----------------------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_errors(r: dict, path: Path) -> None:
    """Per-population relative RMS error (bars, log scale) and spike Hamming distance."""
    plt = _plt()
    rows = r["layers"]
    names = [x["population"] for x in rows]
    rel = [x.get("rel_rms_err") or 0.0 for x in rows]
    rel = [1e300 if math.isinf(v) else v for v in rel]
    nonzero = [v for v in rel if v > 0]
    floor = max(min(nonzero) / 10, 1e-12) if nonzero else 1e-12
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.22 * len(rows) + 1)))
    y = np.arange(len(rows))
    vals = [max(v, floor) for v in rel]
    colors = ["#c0392b" if x.get("first_divergent_frame") else "#2e86c1" for x in rows]
    ax.barh(y, vals, color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(left=floor)
    ax.set_xlabel("relative RMS error of the membrane state / output (RMS Δ / RMS of " + r["a"] + ")")
    ax.set_title(f"{pair_title(r)}: error per population (red: diverges)", fontsize=9)
    if all(v <= floor for v in vals):
        ax.text(0.5, 0.5, "all errors are zero", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_membrane(traces: list[Trace], key: str, path: Path, *, row: int = 0, neurons: int = 4,
                  max_frames: int = 256) -> bool:
    """Membrane (or output) trace of the `neurons` neurons that differ most between the stages."""
    have = [t for t in traces if key in t.entries]
    if not have:
        return False
    plt = _plt()
    fld = have[0].entries[key].state_field
    arrs = [t.entries[key].get(fld) for t in have]
    arrs = [a for a in arrs if a is not None]
    if not arrs:
        return False
    flat = [a[row].reshape(-1, a.shape[-1]) if fld != "token" else a[row] for a in arrs]
    F = min(max_frames, flat[0].shape[0])
    flat = [f[:F].astype(np.float64) for f in flat]
    spread = np.max([np.abs(f - flat[0]).max(axis=0) for f in flat], axis=0) if len(flat) > 1 else np.abs(flat[0]).max(0)
    pick = np.argsort(-spread, kind="stable")[:neurons]
    fig, axes = plt.subplots(len(pick), 1, figsize=(9, 1.6 * len(pick) + 0.6), sharex=True, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, n in zip(axes[:, 0], pick):
        for j, (t, f) in enumerate(zip(have, flat)):
            ax.plot(np.arange(F), f[:, n], styles[j % 4], lw=1, label=t.stage)
        ax.set_ylabel(f"#{n}", fontsize=8)
        K = have[0].frames
        if fld != "token":
            for x in range(K, F, K):
                ax.axvline(x - 0.5, color="#ddd", lw=0.5)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("frame (token boundaries in grey)" if fld != "token" else "token")
    fig.suptitle(f"{key}: {fld} of the neurons that differ most (row {row})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_raster(traces: list[Trace], key: str, path: Path, *, row: int = 0, max_neurons: int = 128,
                max_frames: int = 256) -> bool:
    """Spike raster (frames × neurons) of each stage, plus the mismatches of the last vs the first."""
    have = [t for t in traces if key in t.entries and t.entries[key].get("spikes") is not None]
    if not have:
        return False
    plt = _plt()
    rasters = []
    for t in have:
        s = t.entries[key].get("spikes")[row]
        s = s.reshape(-1, s.shape[-1])[:max_frames, :max_neurons]
        rasters.append(s)
    panels = rasters + ([np.asarray(rasters[0] != rasters[-1], dtype=np.uint8)] if len(rasters) > 1 else [])
    titles = [t.stage for t in have] + ([f"{have[0].stage} ≠ {have[-1].stage}"] if len(rasters) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.5, 4), squeeze=False)
    for ax, p, title in zip(axes[0], panels, titles):
        cmap = "Reds" if "≠" in title else "Greys"
        ax.imshow(p.T, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
        ax.set_title(f"{title} ({int(p.sum())})", fontsize=8)
        ax.set_xlabel("frame")
    axes[0, 0].set_ylabel("neuron")
    fig.suptitle(f"{key}: spikes (row {row})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_bits(sweep: list[dict], path: Path) -> bool:
    """Quantization error against weight bits: logits KL and median relative membrane error."""
    if not sweep:
        return False
    plt = _plt()
    sweep = sorted(sweep, key=lambda x: x["bits"])
    bits = [x["bits"] for x in sweep]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("kl", "logits KL (nats)"), ("rel_rms_median", "median rel. RMS membrane error")):
        ys = [x.get(name) for x in sweep]
        ax.plot(bits, [v if v is not None and v > 0 else np.nan for v in ys], "o-", label=label)
    ax2 = ax.twinx()                                  # a fraction that is often exactly 0: linear axis
    ys = [x.get("top1_disagreement") for x in sweep]
    ax2.plot(bits, [np.nan if v is None else v for v in ys], "s--", color="#7f7f7f", label="top-1 disagreement")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("top-1 disagreement (linear)", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("weight bits")
    ax.set_xticks(bits)
    ax.set_title("quantization error vs weight bits (vs reference)", fontsize=9)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ---- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}.ok{color:#1e8449;font-weight:bold}.bad{color:#c0392b;font-weight:bold}
.meta{font-size:12px;color:#555}img{max-width:100%;border:1px solid #eee;margin:6px 0}code{background:#f5f5f5;padding:1px 3px}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _summary_table(results: list[dict]) -> str:
    h = ["<table><tr><th>pair</th><th>bit-exact</th><th>top-1 agreement</th><th>KL (mean)</th><th>max |Δlogit|</th>"
         "<th>first divergence</th><th>greedy prefix</th><th>perplexity a / b</th></tr>"]
    for r in results:
        g = r.get("greedy")
        p = r.get("perplexity")
        be = '<span class="ok">yes</span>' if r["bit_exact"] else '<span class="bad">no</span>'
        h.append(f"<tr><td>{_e(pair_title(r))}</td><td>{be}</td><td>{_pct(r.get('top1_agreement'))}</td>"
                 f"<td>{_f(r.get('kl'))}</td><td>{_f(r.get('max_abs_logit_diff'))}</td>"
                 f"<td>{_e(_div_text(r.get('first_divergence')))}</td>"
                 f"<td>{'-' if not g else _e(str(g['common_prefix']) + '/' + str(len(g['tokens_a'])))}</td>"
                 f"<td>{'-' if not p else _e(_f(p['a'], '.4g') + ' / ' + _f(p['b'], '.4g'))}</td></tr>")
    h.append("</table>")
    return "\n".join(h)


def _layer_table(r: dict) -> str:
    h = ["<table><tr><th>population</th><th>kind</th><th>max err</th><th>RMS err</th><th>rel. RMS</th>"
         "<th>first divergent (token, frame)</th><th>spike agreement</th><th>Hamming</th>"
         f"<th>saturation {_e(r['a'])}</th><th>saturation {_e(r['b'])}</th></tr>"]
    for x in worst_first(r["layers"]):
        d = x.get("first_divergent_frame")
        dv = "-" if not d else f"{d['token']}, {'-' if d['frame'] is None else d['frame']}"
        sa, sb = ((", ".join(f"{k} {v}" for k, v in x[f].items() if v) or "0") if x.get(f) else "-"
                  for f in ("saturation_a", "saturation_b"))
        h.append(f"<tr><td>{_e(x['population'])}</td><td>{_e(x.get('kind', ''))}</td><td>{_f(x.get('max_err'))}</td>"
                 f"<td>{_f(x.get('rms_err'))}</td><td>{_f(x.get('rel_rms_err'))}</td><td>{_e(dv)}</td>"
                 f"<td>{_pct(x.get('spike_agreement'))}</td><td>{_e(x.get('hamming', '-'))}</td>"
                 f"<td>{_e(sa)}</td><td>{_e(sb)}</td></tr>")
    h.append("</table>")
    return "\n".join(h)


def choose_population(results: list[dict], traces: list[Trace], requested: str | None) -> str | None:
    if requested:
        return requested
    for r in results:
        d = r.get("first_divergence")
        if d:
            key = d["population"]
            if any(key in t.entries and t.entries[key].get("spikes") is not None for t in traces):
                return key
    for t in traces:                      # a spiking population: the first hidden layer, else any
        for k in t.keys():
            if k.endswith(".hidden") and t.entries[k].get("spikes") is not None:
                return k
        for k in t.keys():
            if t.entries[k].get("spikes") is not None:
                return k
    return None


def write_html(out_dir: str | os.PathLike, results: list[dict], traces: list[Trace], *, population: str | None = None,
               bits_sweep: list[dict] | None = None, title: str = "ns-compile comparison", meta: dict | None = None,
               tolerance_failures: list[str] | None = None, extra=None) -> Path:
    """Write `out_dir/index.html` and its PNGs atomically (the whole folder appears at once).

    `extra(folder) -> str`, when given, is called with the folder being written: it may add files
    there (referenced by relative names) and returns HTML placed right after the summary."""
    from ns_compile.atomic import atomic_path

    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        tmp = Path(tmp)
        parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
                 f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
        if meta:
            parts.append("<p class=\"meta\">" + "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in meta.items())
                         + "</p>")
        if tolerance_failures is not None:
            if tolerance_failures:
                parts.append("<p class=\"bad\">tolerances exceeded:</p><ul>" +
                             "".join(f"<li>{_e(x)}</li>" for x in tolerance_failures) + "</ul>")
            else:
                parts.append("<p class=\"ok\">all requested tolerances met</p>")
        parts.append("<h2>Summary</h2>")
        parts.append(_summary_table(results))
        if extra is not None:
            parts.append(extra(tmp))
        pop = choose_population(results, traces, population)
        if pop:
            parts.append(f"<h2>Population <code>{_e(pop)}</code></h2>")
            if plot_membrane(traces, pop, tmp / "membrane.png"):
                parts.append('<h3>Membrane traces</h3><img src="membrane.png" alt="membrane traces">')
            if plot_raster(traces, pop, tmp / "raster.png"):
                parts.append('<h3>Spike raster</h3><img src="raster.png" alt="spike raster">')
            elif not any(pop in t.entries for t in traces):
                parts.append(f"<p>no stage recorded {_e(pop)}</p>")
        if bits_sweep:
            if plot_bits(bits_sweep, tmp / "bits.png"):
                parts.append('<h2>Quantization error vs weight bits</h2><img src="bits.png" alt="error vs bits">')
                parts.append("<table><tr><th>bits</th><th>KL</th><th>top-1 disagreement</th>"
                             "<th>median rel. RMS</th></tr>" + "".join(
                                 f"<tr><td>{x['bits']}</td><td>{_f(x.get('kl'))}</td>"
                                 f"<td>{_f(x.get('top1_disagreement'))}</td><td>{_f(x.get('rel_rms_median'))}</td></tr>"
                                 for x in sorted(bits_sweep, key=lambda x: x['bits'])) + "</table>")
        for i, r in enumerate(results):
            parts.append(f"<h2>{_e(pair_title(r))}</h2>")
            png = f"pair{i}_errors.png"
            plot_errors(r, tmp / png)
            parts.append(f'<img src="{png}" alt="errors per population">')
            parts.append(_layer_table(r))
        parts.append("<p class=\"meta\">Generated by ns-compile compare. Definitions: docs/compare.md.</p>")
        parts.append("</body></html>")
        (tmp / "index.html").write_text("\n".join(parts), encoding="utf-8")
        (tmp / "results.json").write_text(to_json(sanitize(results)), encoding="utf-8")
        os.chmod(tmp, 0o755)
    return out_dir / "index.html"
