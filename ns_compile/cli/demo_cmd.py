"""`ns-compile demo`: the main job, end to end, on a shipped demo model (examples/).

compile (calibrated on held-out text, partitioned for the hardware profile) → generate from a prompt
in the fp32 reference, in Lava's CPU simulator in fixed point and in the integer emulator →
fidelity (quantized vs fp32 on held-out tokens; Lava vs emulator bit for bit over the whole run)
→ resources and energy (the partitioner's plan) → one HTML report folder.

Everything is done by the library functions the other commands use (`compile_checkpoint`,
`ns_compile.verify.stages.run_stage` / `compare_traces`, `write_html`, `partition_graph`); this
module only chooses the inputs, orders the stages and formats the result.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import click

from ns_compile.errors import ToleranceExceeded, UserError

# model name -> (path inside examples/, display name)
MODELS = {
    "neuronspark": ("neuronspark-demo", "NeuronSpark"),
    "nord": ("nord-demo/nord_final.pt", "Nord v3"),
}
DEFAULT_PROMPT = "The os module provides"
DEFAULT_REPORT = "ns-compile-report"
HELDOUT = "data/heldout.txt"
CALIBRATION_CHARS = 4000        # head of heldout.txt; compile keeps its first 512 tokens
EVAL_OFFSET = 0.5               # the fidelity slice starts at the first line after the middle of the file
EXAMPLES_ENV = "NS_COMPILE_EXAMPLES"


# ---- locating the demo models ----------------------------------------------------------------------

def examples_dir() -> Path:
    """The examples/ folder: $NS_COMPILE_EXAMPLES, else the one next to the installed package
    (the repository root of a checkout or an editable install)."""
    env = os.environ.get(EXAMPLES_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise UserError(f"${EXAMPLES_ENV} does not name a folder", p)
        return p
    import ns_compile
    p = Path(ns_compile.__file__).resolve().parent.parent / "examples"
    if not p.is_dir():
        raise UserError("the demo models are not installed: expected the examples/ folder of the ns-compile "
                        f"repository next to the package (a git checkout with `pip install -e .`), or set "
                        f"${EXAMPLES_ENV} to it", p)
    return p


def demo_paths(model: str) -> tuple[Path, Path]:
    """(checkpoint, held-out text) of a demo model; UserError naming what is missing."""
    if model not in MODELS:
        raise UserError(f"unknown demo model {model!r} (choose from {', '.join(MODELS)})")
    ex = examples_dir()
    ckpt = ex / MODELS[model][0]
    if not ckpt.exists():
        raise UserError(f"the {model} demo model is missing (see examples/README.md)", ckpt)
    heldout = ex / HELDOUT
    if not heldout.is_file():
        raise UserError("the held-out text of the demo models is missing (see examples/README.md)", heldout)
    return ckpt, heldout


def check_family_support(model: str) -> None:
    """`--model nord` needs the Nord lowering and its Lava/emulator/compare support: fail clearly
    (before any work) when this installation lacks a piece."""
    if model != "nord":
        return
    import importlib.util
    missing = []
    for mod, what in (("ns_compile.lower.nord", "the Nord lowering (ns_compile/lower/nord.py)"),
                      ("ns_compile.quant.nord", "Nord calibration/quantization (ns_compile/quant/nord.py)"),
                      ("ns_compile.sim.nord", "the Nord integer emulator (sim/nord.py)"),
                      ("ns_compile.verify.nord", "Nord compare stages (ns_compile/verify/nord.py)"),
                      ("ns_compile.backends.lava.nord", "the Nord Lava backend (backends/lava/nord.py)")):
        try:
            ok = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            ok = False
        if not ok:
            missing.append(what)
    if not missing:
        from ns_compile.lower import nord as lower_nord
        if not hasattr(lower_nord, "lower_nord"):
            missing.append("ns_compile.lower.nord.lower_nord")
    if missing:
        raise UserError("demo --model nord needs Nord support that this installation lacks: " + "; ".join(missing))


def text_slices(heldout: Path, folder: Path, eval_chars: int) -> tuple[Path, Path, dict]:
    """Disjoint slices of the held-out text: its head for calibration, a later part for fidelity."""
    text = heldout.read_text(encoding="utf-8")
    cut = text.rfind("\n", 0, CALIBRATION_CHARS)
    cal = text[:cut if cut > 0 else CALIBRATION_CHARS]
    start = text.find("\n", int(len(text) * EVAL_OFFSET)) + 1
    end = text.rfind("\n", start, start + eval_chars)
    ev = text[start:end if end > start else start + eval_chars]
    (folder / "calibration.txt").write_text(cal, encoding="utf-8")
    (folder / "heldout_eval.txt").write_text(ev, encoding="utf-8")
    info = {"calibration_chars": [0, len(cal)], "eval_chars": [start, start + len(ev)], "file": str(heldout)}
    return folder / "calibration.txt", folder / "heldout_eval.txt", info


# ---- progress ----------------------------------------------------------------------------------------

_draw_lock = threading.Lock()
_fork_hook = False


def _install_fork_hook():
    """The Lava runner forks while a ticker may be drawing: fork only between two draws."""
    global _fork_hook
    if not _fork_hook and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_draw_lock.acquire, after_in_parent=_draw_lock.release,
                            after_in_child=_draw_lock.release)
        _fork_hook = True


class Stages:
    """One line per stage on stderr ("[3/7] ... done in 4.2 s"); on a terminal also a live
    ns_compile.progress bar (elapsed time) while the stage runs."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.i, self.quiet = total, 0, quiet
        self.times: dict[str, float] = {}
        self.tty = sys.stderr.isatty() and not quiet

    def __call__(self, what: str, key: str):
        return _Stage(self, what, key)


class _Stage:
    def __init__(self, owner: Stages, what: str, key: str):
        self.o, self.what, self.key = owner, what, key

    def __enter__(self):
        from ns_compile.progress import Progress
        o = self.o
        o.i += 1
        self.label = f"[{o.i}/{o.total}] {self.what}"
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = None
        if o.quiet:
            return self
        if o.tty:
            _install_fork_hook()
            self._bar = Progress(None, self.label, enabled=True)

            def tick():
                while not self._stop.wait(0.25):
                    with _draw_lock:
                        self._bar._draw(force=True)

            with _draw_lock:
                self._bar._draw(force=True)
            self._thread = threading.Thread(target=tick, daemon=True)
            self._thread.start()
        else:
            click.echo(f"{self.label} ...", err=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        dt = time.perf_counter() - self.t0
        self.o.times[self.key] = round(dt, 2)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self.o.quiet:
            return False
        status = "done" if exc_type is None else "failed"
        if self.o.tty:
            with _draw_lock:
                sys.stderr.write(f"\r\033[K{self.label}: {status} in {dt:.1f} s\n")
                sys.stderr.flush()
        else:
            click.echo(f"{self.label}: {status} in {dt:.1f} s", err=True)
        return False


# ---- the demo ----------------------------------------------------------------------------------------

def run_demo(model: str = "neuronspark", *, prompt: str | None = None, max_new_tokens: int = 16,
             report: str | os.PathLike = DEFAULT_REPORT, hardware: str = "kapoho-point", granularity: str = "fused",
             weight_bits: int = 8, eval_tokens: int = 128, quiet: bool = False) -> dict:
    """Run the whole demo; returns a JSON-able dict (what `demo --json` prints). The report folder
    (index.html, PNGs, partition/, the artifact) appears atomically at the end."""
    import numpy as np

    from ns_compile.cli.compile_cmd import compile_checkpoint
    from ns_compile.models.base import GenerationConfig
    from ns_compile.partition import load_profile, partition_graph
    from ns_compile.verify.metrics import compare_traces
    from ns_compile.verify.report import write_html
    from ns_compile.verify.stages import open_artifact, open_checkpoint, read_text_ids, run_stage

    if granularity not in ("fused", "population"):
        raise UserError(f"--granularity must be fused or population, got {granularity!r}")
    if max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1")
    check_family_support(model)
    ckpt, heldout = demo_paths(model)
    profile = load_profile(hardware)               # a bad profile fails before any work
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if not prompt.strip():
        raise UserError("--prompt is empty")
    report = Path(report)
    st = Stages(7, quiet=quiet)
    out: dict = {"model": model, "checkpoint": str(ckpt), "hardware": profile.name, "granularity": granularity,
                 "weight_bits": weight_bits, "prompt": prompt, "max_new_tokens": max_new_tokens}
    report.parent.mkdir(parents=True, exist_ok=True)
    # staged next to the report so that the artifact's relative checkpoint path stays right when it moves in
    work = Path(tempfile.mkdtemp(prefix=f".{report.name}.demo.", dir=report.parent))
    try:
        cal, ev, slices = text_slices(heldout, work, eval_chars=max(2000, 8 * eval_tokens))
        art_path = work / f"{ckpt.stem if ckpt.is_file() else ckpt.name}.nsa"

        with st(f"compiling {ckpt.name} for {profile.name} ({weight_bits}-bit weights, calibration on held-out "
                f"text)", "compile"):
            manifest, _rep, _q = compile_checkpoint(str(ckpt), str(art_path), weight_bits=weight_bits,
                                                    calibration=str(cal), hardware=hardware)
            art = open_artifact(art_path)
            ref = open_checkpoint(ckpt)
        h = ref.handle
        out["calibration"] = {k: v for k, v in (manifest.get("options") or {}).items()
                              if k.startswith("calibration")}
        out["calibration"]["slice_chars"] = slices["calibration_chars"]

        with st(f"partitioning onto {profile.name} (tiles, METIS placement, traffic, energy)", "partition"):
            part = partition_graph(art.graph, profile, activity=art.graph.meta.get("activity"))
        pj = part.to_json()

        prompt_ids = [int(t) for t in h.encode_prompt(prompt)]
        vocab = int(h.config.vocab_size)
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise UserError("the prompt tokenizes to ids outside the model's vocabulary")
        out["prompt_ids"] = prompt_ids

        with st(f"fp32 reference: generating {max_new_tokens} tokens", "reference_generate"):
            ref_new = [int(t) for t in h.generate(prompt_ids, GenerationConfig(max_new_tokens=max_new_tokens,
                                                                              temperature=0.0, seed=0))]
        with st(f"Lava CPU simulator, fixed point ({granularity}): generating {max_new_tokens} tokens, "
                f"every state traced", "lava"):
            lava_t = run_stage("lava-sim-fixed", art, [prompt_ids], max_new_tokens=max_new_tokens,
                               granularity=granularity, trace_generated=True)
        lava_new = [int(t) for t in lava_t.meta["greedy"]["tokens"]]
        run_ids = lava_t.input_ids.tolist()

        with st("integer emulator: the same generation, and the same run state by state", "emulator"):
            from ns_compile.sim import Emulator
            emu_new = [int(t) for t in Emulator(art.graph).generate(prompt_ids, max_new_tokens=max_new_tokens,
                                                                    temperature=0.0, seed=0, eos_token_id=None)]
            emu_run = run_stage("emulator", art, run_ids)
            run_cmp = compare_traces(emu_run, lava_t)
        identical = emu_new == lava_new and bool(run_cmp["bit_exact"])

        with st(f"fidelity on held-out text: fp32 reference vs quantized (emulator), {eval_tokens} tokens",
                "fidelity"):
            max_len = getattr(h.config, "max_seq_len", None)
            n_eval = min(eval_tokens, int(max_len)) if max_len else eval_tokens
            ids = read_text_ids(h, ev, n_eval)
            ref_t = run_stage("reference", ref, ids, input_source=f"held-out text ({len(ids[0])} tokens)")
            emu_t = run_stage("emulator", art, ids, input_source=f"held-out text ({len(ids[0])} tokens)")
            held = compare_traces(ref_t, emu_t)

        def dec(ids_):
            t = h.decode(ids_)
            return t if t is not None else " ".join(map(str, ids_))

        out["generation"] = {
            "reference": {"ids": ref_new, "text": dec(ref_new), "stage": "fp32 reference (PyTorch)"},
            "lava": {"ids": lava_new, "text": dec(lava_new),
                     "stage": f"Lava CPU simulator, fixed point ({granularity})"},
            "emulator": {"ids": emu_new, "text": dec(emu_new), "stage": "integer emulator"},
        }
        agree = 0
        for a, b in zip(ref_new, lava_new):
            if a != b:
                break
            agree += 1
        out["generation"]["reference_vs_lava_common_prefix"] = agree
        out["identical"] = identical
        out["fidelity"] = {
            "heldout": _pair_summary(held, tokens=len(ids[0]), source=f"{heldout.name} chars "
                                     f"{slices['eval_chars'][0]}..{slices['eval_chars'][1]}"),
            "run": {**_pair_summary(run_cmp, tokens=len(run_ids[0]), source="the demo's generation run"),
                    "tokens_identical": emu_new == lava_new, "new_tokens": len(lava_new)},
        }
        out["resources"] = _resource_summary(pj, profile)

        report_name = f"{model}-demo.nsa"
        out["report"] = str(report / "index.html")
        out["artifact"] = str(report / report_name)
        with st(f"writing the HTML report to {report}/", "report"):
            meta = {"model": f"{ckpt} ({MODELS[model][1]})", "hardware": f"{profile.name} ({profile.chips} chips)",
                    "prompt": prompt, "artifact": report_name,
                    "calibration": f"{heldout.name}, first {slices['calibration_chars'][1]} characters",
                    "held-out comparison": f"{heldout.name}, {len(ids[0])} tokens from character "
                                           f"{slices['eval_chars'][0]}",
                    "run comparison": f"the {len(run_ids[0])} tokens of the generation run (prompt + generated)"}
            held_r = {**held, "a": "fp32 reference", "b": "quantized (emulator), held-out"}
            run_r = {**run_cmp, "a": "emulator", "b": "lava-sim-fixed, generation run"}

            def extra(folder: Path) -> str:
                shutil.copy2(art_path, folder / report_name)
                part.write_report(folder / "partition")
                return _html_sections(out, pj, part.render())

            write_html(report, [held_r, run_r], [ref_t, emu_t], meta=meta, extra=extra,
                       title=f"ns-compile demo: {ckpt.name} on {profile.name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["timings_s"] = dict(st.times)
    out["timings_s"]["total"] = round(sum(st.times.values()), 2)
    return out


def _pair_summary(r: dict, *, tokens: int, source: str) -> dict:
    p = r.get("perplexity") or {}
    return {"a": r["a"], "b": r["b"], "tokens": tokens, "source": source,
            "top1_agreement": r.get("top1_agreement"), "kl": r.get("kl"), "kl_max": r.get("kl_max"),
            "max_abs_logit_diff": r.get("max_abs_logit_diff"), "bit_exact": bool(r.get("bit_exact")),
            "integer": bool(r.get("integer")), "first_divergence": r.get("first_divergence"),
            "perplexity_a": p.get("a"), "perplexity_b": p.get("b"), "perplexity_rel_diff": p.get("rel_diff")}


_SOURCE_KEYS = (("energy.synaptic_op_j", "synaptic op"), ("energy.neuron_update_j", "neuron update"),
                ("energy.message_core_j", "message in a core"), ("energy.message_hop_j", "message per mesh hop"),
                ("energy.message_inter_chip_j", "message between chips"), ("energy.static_power_w", "static power"),
                ("time.barrier_s", "time-step barrier"), ("time.inter_chip_barrier_s", "multi-chip barrier"),
                ("time.synaptic_op_s", "synaptic op time"), ("time.neuron_update_s", "neuron update time"))


def _resource_summary(pj: dict, profile) -> dict:
    consts = pj.get("constants") or profile.constants()
    sources = []
    for key, label in _SOURCE_KEYS:
        c = consts.get(key)
        if c:
            sources.append({"figure": label, "key": key, "value": c["value"], "unit": c["unit"],
                            "source": c["source"], "confidence": c["confidence"]})
    lat = pj["latency"]
    return {"profile": pj["profile"]["name"], "chips_available": pj["profile"]["chips"],
            "cores_per_chip": pj["profile"]["cores_per_chip"],
            "chips_used": pj["chips_used"], "chips_lower_bound": pj["chips_lower_bound"],
            "cores_used": pj["cores_used"], "cores_lower_bound": pj["cores_lower_bound"],
            "binding_budget": pj["lower_bound_binding_budget"], "tiles": pj["tiles"],
            "neurons": pj["graph"]["neurons"], "synapses": pj["graph"]["synapses"],
            "naive_cores_used": pj["naive"]["cores_used"],
            "traffic_per_token": {k: pj[k] for k in ("inter_chip_messages_per_token", "inter_chip_bits_per_token",
                                                     "inter_core_messages_per_token", "inter_core_bits_per_token",
                                                     "intra_core_messages_per_token") if k in pj},
            "latency_s_per_token": pj["latency_s_per_token"], "tokens_per_s": pj["tokens_per_s"],
            "steps_per_token": lat.get("steps_per_token"), "stages": lat.get("stages"),
            "host_round_trips_s": lat.get("host_round_trips_s"),
            "energy_j_per_token": pj["energy_j_per_token"], "energy_j_breakdown": pj["energy_j"],
            "utilization": {b: u for b, u in pj["utilization"].items()},
            "sources": sources}


# ---- formatting --------------------------------------------------------------------------------------

def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for para in text.replace("\t", "    ").split("\n"):
        lines += textwrap.wrap(para, width, replace_whitespace=False, drop_whitespace=False) or [""]
    return [ln.rstrip() for ln in lines]


def side_by_side(left: tuple[str, str], right: tuple[str, str], width: int = 38) -> list[str]:
    a, b = _wrap(left[1], width), _wrap(right[1], width)
    n = max(len(a), len(b))
    a += [""] * (n - len(a))
    b += [""] * (n - len(b))
    rows = [f"  {left[0]:<{width}} | {right[0]}", f"  {'-' * width}-+-{'-' * width}"]
    rows += [f"  {x:<{width}} | {y}".rstrip() for x, y in zip(a, b)]
    return rows


def _si(x, unit=""):
    """Engineering prefixes both ways (0.00438 J -> 4.38 mJ)."""
    if x is None:
        return "-"
    x = float(x)
    if x == 0:
        return f"0 {unit}".strip()
    for f, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"),
                 (1e-12, "p")):
        if abs(x) >= f:
            return f"{x / f:.3g} {p}{unit}".strip()
    return f"{x:.3g} {unit}".strip()


def _unit_of(key: str) -> str:
    return {"j": "J", "s": "s", "w": "W"}.get(key.rsplit("_", 1)[-1], "")


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, spec=".4g"):
    return "-" if x is None else format(x, spec)


def format_demo(out: dict) -> str:
    g = out["generation"]
    name = MODELS[out["model"]][1]
    L = [f"ns-compile demo: {Path(out['checkpoint']).name} ({name}) compiled for {out['hardware']}, "
         f"run in Lava's CPU simulator",
         f"  artifact: {out['artifact']}   ({out['weight_bits']}-bit weights; calibrated on the first "
         f"{out['calibration']['slice_chars'][1]:,} characters of examples/{HELDOUT}, at most 512 tokens)", ""]
    L.append(f"Prompt: {out['prompt']!r}  ({len(out['prompt_ids'])} tokens; greedy, {out['max_new_tokens']} new tokens)")
    L += side_by_side(("fp32 reference (PyTorch)", out["prompt"] + g["reference"]["text"]),
                      (f"Loihi 2 fixed point (Lava sim, {out['granularity']})", out["prompt"] + g["lava"]["text"]))
    n = len(g["lava"]["ids"])
    k = g["reference_vs_lava_common_prefix"]
    if k == n:
        L.append(f"  fp32 and fixed point generate the same {n} tokens")
    else:
        L.append(f"  fp32 and fixed point agree on the first {k} of {n} tokens; then a near-tie argmax flips and the "
                 f"texts part (the held-out statistics below measure the quantization error)")
    L.append("")
    run = out["fidelity"]["run"]
    L.append(f"  integer emulator:  {g['emulator']['text']!r}")
    L.append(f"  Lava (fixed pt):   {g['lava']['text']!r}")
    if out["identical"]:
        L.append(f"  Lava vs emulator: identical -- {n}/{n} generated tokens equal, and every integer state of every "
                 f"frame of the {run['tokens']}-token run bit-exact")
    else:
        why = []
        if not run["tokens_identical"]:
            why.append("the generated tokens differ")
        if not run["bit_exact"]:
            d = run.get("first_divergence")
            why.append("states differ" + (f" (first at {d['layer']} token {d['token']} frame {d['frame']})" if d else ""))
        L.append("  Lava vs emulator: NOT identical -- " + "; ".join(why))
    L.append("")
    held = out["fidelity"]["heldout"]
    L.append("Fidelity")
    rows = [("comparison", "tokens", "top-1 agree", "KL (nats)", "perplexity a -> b", "bit-exact"),
            ("quantized (emulator) vs fp32, held-out", str(held["tokens"]), _pct(held["top1_agreement"]),
             _num(held["kl"], ".3g"),
             f"{_num(held['perplexity_a'], '.2f')} -> {_num(held['perplexity_b'], '.2f')} "
             f"({100 * (held['perplexity_rel_diff'] or 0):+.1f}%)", "-"),
            ("Lava fixed vs emulator, the run", str(run["tokens"]), _pct(run["top1_agreement"]),
             _num(run["kl"], ".3g"), "-", "yes" if run["bit_exact"] else "NO")]
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        L.append("  " + "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
        if j == 0:
            L.append("  " + "  ".join("-" * x for x in w))
    L.append(f"  held-out tokens: {held['source']} (disjoint from the calibration slice)")
    L.append("")
    r = out["resources"]
    t = r["traffic_per_token"]
    L.append(f"Resources and energy on {r['profile']} ({r['chips_available']} chips x {r['cores_per_chip']} cores), "
             f"partitioner's estimate")
    L.append(f"  {r['neurons']:,} neurons, {r['synapses']:,} synapses -> {r['tiles']} tiles")
    L.append(f"  chips used {r['chips_used']} (lower bound {r['chips_lower_bound']}); cores used {r['cores_used']} "
             f"(lower bound {r['cores_lower_bound']}, binding budget {r['binding_budget']}; naive fill "
             f"{r['naive_cores_used']})")
    L.append(f"  traffic/token: inter-chip {_si(t.get('inter_chip_messages_per_token'))} msgs, inter-core "
             f"{_si(t.get('inter_core_messages_per_token'))} msgs ({_si(t.get('inter_core_bits_per_token'), 'b')}), "
             f"intra-core {_si(t.get('intra_core_messages_per_token'))} msgs")
    L.append(f"  latency/token: {_si(r['latency_s_per_token'], 's')} ({r['stages']} stages, "
             f"{r['steps_per_token']:.0f} steps, host round trips {_si(r['host_round_trips_s'], 's')}) -> "
             f"{r['tokens_per_s']:.1f} tokens/s")
    eb = r["energy_j_breakdown"]
    L.append(f"  energy/token: {_si(r['energy_j_per_token'], 'J')} (" +
             ", ".join(f"{k.replace('_', ' ')} {_si(v, 'J')}" for k, v in eb.items() if v) + ")")
    L.append("  sources of the per-operation figures:")
    for s in r["sources"]:
        L.append(f"    {s['figure']:<22} {_si(s['value'], _unit_of(s['key'])):>8}  {s['source']} {s['confidence']}")
    L.append("")
    L.append(f"Report: {out['report']}  (comparison tables and plots, partition plots in partition/, "
             f"the artifact {Path(out['artifact']).name})")
    tm = out["timings_s"]
    L.append("Time: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in tm.items() if k != "total")
             + f"; total {tm['total']:.1f} s")
    return "\n".join(L)


def _html_sections(out: dict, pj: dict, plan_text: str) -> str:
    import html
    e = html.escape
    g = out["generation"]
    run = out["fidelity"]["run"]
    ok = ('<span class="ok">identical</span>' if out["identical"] else '<span class="bad">NOT identical</span>')
    parts = ["<h2>Generation</h2>",
             f"<p>prompt <code>{e(out['prompt'])}</code>, greedy, {out['max_new_tokens']} new tokens</p>",
             "<table><tr><th>stage</th><th>text</th><th>token ids</th></tr>"]
    for k in ("reference", "lava", "emulator"):
        parts.append(f"<tr><td>{e(g[k]['stage'])}</td><td style=\"text-align:left;white-space:pre-wrap\">"
                     f"{e(out['prompt'] + g[k]['text'])}</td><td>{e(' '.join(map(str, g[k]['ids'])))}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p>Lava vs emulator: {ok} ({run['new_tokens']} generated tokens; every integer state of the "
                 f"{run['tokens']}-token run compared: bit-exact {'yes' if run['bit_exact'] else 'no'})</p>")
    r = out["resources"]
    parts.append(f"<h2>Resources and energy on {e(r['profile'])}</h2>")
    parts.append(f'<pre style="white-space:pre-wrap">{e(plan_text)}</pre>')
    plots = [("core_utilization_metis.png", "core utilization (METIS)")]
    if r["chips_used"] > 1:
        plots.append(("chip_traffic_metis.png", "chip-to-chip traffic (METIS)"))
    plots.append(("core_utilization_naive.png", "core utilization (naive fill)"))
    for png, alt in plots:
        parts.append(f'<h3>{e(alt)}</h3><img src="partition/{png}" alt="{e(alt)}">')
    if r["chips_used"] == 1:
        parts.append("<p>One chip: no chip-to-chip traffic (partition/chip_traffic_*.png are empty).</p>")
    parts.append("<h3>Sources of the per-operation figures</h3><table><tr><th>figure</th><th>value</th>"
                 "<th>unit</th><th>source</th><th>confidence</th></tr>" +
                 "".join(f"<tr><td>{e(s['figure'])}</td><td>{e(str(s['value']))}</td><td>{e(s['unit'])}</td>"
                         f"<td>{e(s['source'])}</td><td>{e(s['confidence'])}</td></tr>" for s in r["sources"])
                 + "</table>")
    parts.append('<p class="meta">partition/: plan.json, report.txt, per-core utilization CSVs '
                 '(docs/partition.md)</p>')
    return "\n".join(parts)


@click.command("demo")
@click.option("--model", type=click.Choice(list(MODELS)), default="neuronspark", show_default=True,
              help="Which shipped demo model (examples/).")
@click.option("--prompt", default=None, help=f"Prompt text (default {DEFAULT_PROMPT!r}).")
@click.option("--max-new-tokens", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Tokens to generate greedily in every stage.")
@click.option("--report", "report", default=DEFAULT_REPORT, show_default=True, type=click.Path(file_okay=False),
              help="Folder for the HTML report (replaced atomically).")
@click.option("--hardware", default="kapoho-point", show_default=True,
              help="Hardware profile to compile and partition for (built-in name or JSON file).")
@click.option("--granularity", type=click.Choice(["fused", "population"]), default="fused", show_default=True,
              help="Lava processes: one per stage (fast) or one per population + one Dense per synapse group "
                   "(the view that maps onto cores; ~8x slower).")
@click.option("--eval-tokens", default=128, show_default=True, type=click.IntRange(2, 512),
              help="Held-out tokens for the fp32-vs-quantized fidelity figures.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the tables.")
def command(model, prompt, max_new_tokens, report, hardware, granularity, eval_tokens, as_json):
    """The main job on a shipped demo model: compile it for Loihi 2 (HARDWARE, calibrated on held-out
    text), generate from PROMPT in Lava's CPU simulator in fixed point and in the fp32 reference,
    check Lava against the integer emulator bit for bit, measure the quantization's fidelity on
    held-out text, report resources and energy, and write an HTML report. Needs no network."""
    out = run_demo(model, prompt=prompt, max_new_tokens=max_new_tokens, report=report, hardware=hardware,
                   granularity=granularity, eval_tokens=eval_tokens)
    if as_json:
        from ns_compile.verify.report import sanitize
        click.echo(json.dumps(sanitize(out), indent=1, ensure_ascii=False))
    else:
        click.echo(format_demo(out))
    if not out["identical"]:
        raise ToleranceExceeded("Lava's fixed-point run is not identical to the integer emulator")
