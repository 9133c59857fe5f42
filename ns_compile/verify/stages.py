"""Stage runners: run one stage on a batch of token ids and return its `Trace`.

    reference        exact fp32 model of the checkpoint (CPU or CUDA)
    reference-bf16   the same with bf16 matmuls (fp32 state, like upstream autocast)
    emulator         the integer emulator (ns_compile.sim) on a compiled artifact
    lava-sim-float   the Lava backend, floating-point process models (Lava CPU simulator)
    lava-sim-fixed   the Lava backend, fixed-point process models (bit-exact to the emulator)
    loihi2           Loihi 2 hardware (needs lava-loihi; otherwise a UserError)

The reference needs a checkpoint (given, or the one recorded in the artifact's manifest); the
other stages need an artifact (`ns_compile.artifact.load_artifact`). Nothing here imports Lava
unless a Lava stage is run.
"""
from __future__ import annotations

import fnmatch
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ns_compile.errors import UserError
from ns_compile.verify.keys import canonical_key, parse_key
from ns_compile.verify.trace import INTEGER_STAGES, STAGES, Trace, runtime_info, tree_sha256

REFERENCE_STAGES = ("reference", "reference-bf16")
ARTIFACT_STAGES = ("emulator", "lava-sim-float", "lava-sim-fixed", "loihi2")

_REF_KINDS = {"input": "plif_static", "gate": "plif_static", "up": "plif_static", "output": "plif_static",
              "hidden": "plif_selective", "product": "product", "aggregate": "host", "residual": "host"}


def check_stage(name: str) -> str:
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r} (choose from {', '.join(STAGES)})")
    return name


def parse_stages(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UserError("--stages is empty")
    for n in names:
        check_stage(n)
    if len(set(names)) != len(names):
        raise UserError(f"--stages lists a stage twice: {text}")
    return names


# ---- sources --------------------------------------------------------------------------------------

@dataclass
class Source:
    """A checkpoint or an artifact, opened once and shared by the stages."""
    path: Path
    handle: Any = None           # ModelHandle (checkpoint)
    graph: Any = None            # quantized IR Graph (artifact)
    manifest: dict | None = None
    _checksum: str | None = None

    @property
    def is_artifact(self) -> bool:
        return self.graph is not None

    def checksum(self) -> str:
        if self._checksum is None:
            m = self.manifest or {}
            self._checksum = m.get("checksum") or m.get("sha256") or _weights_checksum(self.path)
        return self._checksum


def _weights_checksum(path: Path) -> str:
    p = Path(path)
    if p.is_dir() and (p / "model.safetensors").is_file():
        return "sha256:" + tree_sha256(p / "model.safetensors")
    return "sha256:" + tree_sha256(p)


def looks_like_checkpoint(path: Path) -> bool:
    p = Path(path)
    if p.is_dir():
        return (p / "config.json").is_file()
    return p.suffix in (".pt", ".pth", ".bin", ".ckpt") or p.name == "config.json" or p.suffix == ".safetensors"


def open_checkpoint(path) -> Source:
    from ns_compile.models import load_model

    return Source(Path(path), handle=load_model(path, weights=True))


def open_artifact(path) -> Source:
    p = Path(path)
    if not p.exists():
        raise UserError("no such artifact", p)
    try:
        from ns_compile.artifact import load_artifact
    except ImportError:
        raise UserError("this installation cannot read artifacts yet (ns_compile.artifact is missing)", p) from None
    graph, manifest = load_artifact(p)
    return Source(p, graph=graph, manifest=dict(manifest or {}))


def open_source(path) -> Source:
    """A checkpoint (directory with config.json, .pt/.pth) or an artifact."""
    p = Path(path)
    if not p.exists():
        raise UserError("no such file or directory", p)
    return open_checkpoint(p) if looks_like_checkpoint(p) else open_artifact(p)


def manifest_checkpoint(src: Source) -> Path | None:
    """The checkpoint path the artifact's manifest records, when it still exists."""
    m = src.manifest or {}
    for k in ("checkpoint", "source", "checkpoint_path"):
        v = m.get(k)
        if isinstance(v, dict):
            v = v.get("path") or v.get("checkpoint")
        if isinstance(v, str) and v:
            p = Path(v)
            if not p.is_absolute():
                p = (src.path.parent / p)
            if p.exists():
                return p
    return None


# ---- inputs ---------------------------------------------------------------------------------------

def read_text_ids(handle, path, max_tokens: int | None = None) -> list[list[int]]:
    """Tokenize a text file with the model's tokenizer: one row, at most `max_tokens` ids."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such file", p) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read as UTF-8 text: {e}", p) from None
    if handle is None or getattr(handle, "tokenizer", None) is None:
        raise UserError("--text needs the model's tokenizer (a checkpoint with tokenizer.json); use --input-ids", p)
    ids = handle.encode_prompt(text)
    if max_tokens:
        ids = ids[:max_tokens]
    if len(ids) < 1:
        raise UserError("the text tokenizes to nothing", p)
    return [list(map(int, ids))]


def read_ids_file(path, vocab_size: int | None) -> list[list[int]]:
    from ns_compile.cli.model_io import read_id_batch

    return read_id_batch(path, vocab_size)


# ---- running --------------------------------------------------------------------------------------

def run_stage(stage: str, src: Source, ids: Sequence[Sequence[int]], *, device: str = "cpu",
              populations: list[str] | None = None, max_new_tokens: int = 0,
              input_source: str = "input ids", granularity: str = "fused", trace_generated: bool = False) -> Trace:
    """Run `stage` on ids [B][T] and return its trace (entries filtered by the glob `populations`).

    Lava stages: `granularity` is run_artifact's ("fused" | "population"). With
    `trace_generated=True` (Lava stages, batch 1, max_new_tokens > 0) the trace covers the whole
    generation run — the prompt and every generated token fed back (prompt + greedy[:-1]) — and
    its input ids are those tokens, so that another stage run on them compares state for state."""
    check_stage(stage)
    ids_arr = np.asarray(ids, dtype=np.int64)
    if ids_arr.ndim != 2 or ids_arr.size == 0:
        raise UserError("input ids must be a non-empty [batch][length] list")
    if trace_generated and (stage not in ("lava-sim-float", "lava-sim-fixed", "loihi2") or ids_arr.shape[0] != 1):
        raise UserError("trace_generated needs a Lava stage and a single prompt row")
    if stage in REFERENCE_STAGES:
        if src.handle is None:
            raise UserError(f"stage {stage} needs a checkpoint (--reference CHECKPOINT)", src.path)
        trace = _run_reference(src, ids_arr, bf16=stage == "reference-bf16", device=device, populations=populations,
                               max_new_tokens=max_new_tokens)
    else:
        if not src.is_artifact:
            raise UserError(f"stage {stage} runs a compiled artifact, not a checkpoint (ns-compile compile CKPT -o ART)",
                            src.path)
        trace = _run_artifact(stage, src, ids_arr, populations=populations, max_new_tokens=max_new_tokens,
                              granularity=granularity, trace_generated=trace_generated)
        if trace_generated and max_new_tokens > 0:
            gen = [int(t) for t in trace.meta["greedy"]["tokens"]]
            ids_arr = np.asarray([ids_arr[0].tolist() + gen[:-1]], dtype=np.int64)
    trace.meta.setdefault("input_source", input_source)
    trace.meta["stage"] = stage
    trace.meta.setdefault("integer", stage in INTEGER_STAGES)
    trace.meta["input_ids"] = ids_arr.tolist()
    trace.input_ids = ids_arr
    trace.meta.update({k: v for k, v in runtime_info(device if stage in REFERENCE_STAGES else "cpu").items()
                       if k not in trace.meta})
    return trace.select(populations)


class _Recorder:
    """Collects the reference's probe calls into trace arrays ([S, B, n] -> [B, T, K, n])."""

    def __init__(self, K: int, patterns: list[str] | None):
        self.K, self.patterns = K, patterns
        self.parts: dict[str, dict[str, list]] = {}

    def __call__(self, key: str, **tensors):
        if self.patterns and not any(fnmatch.fnmatchcase(key, p) for p in self.patterns):
            return
        slot = self.parts.setdefault(key, {})
        for name, x in tensors.items():
            if x is None:
                continue
            x = x.detach().float().cpu()
            if name == "token":                       # [T, B, n] -> [B, T, n]
                arr = x.permute(1, 0, 2).numpy()
            else:                                     # [S, B, n] -> [B, T, K, n]
                S, B, n = x.shape
                arr = x.reshape(S // self.K, self.K, B, n).permute(2, 0, 1, 3).numpy()
            if name == "spikes":
                arr = (arr != 0).astype(np.uint8)
            slot.setdefault(name, []).append(arr)

    def into(self, trace: Trace):
        for key, fields in self.parts.items():
            info = parse_key(key)
            kind = _REF_KINDS.get(info.name, "?")
            if info.name == "readout":
                kind = "gated_readout" if info.sublayer == "block" else "accumulate"
            trace.add(key, kind, **{n: np.concatenate(parts, axis=1) for n, parts in fields.items()})


def _run_reference(src: Source, ids: np.ndarray, *, bf16: bool, device: str, populations, max_new_tokens: int) -> Trace:
    import torch

    from ns_compile.models.base import GenerationConfig

    h = src.handle
    if h.family == "nord":                           # ns_compile.verify.nord: fixture-named intermediates
        from ns_compile.verify.nord import reference_trace
        if bf16:
            raise UserError("reference-bf16 is not available for Nord (its reference runs in float32 only)")
        return reference_trace(src, ids, device=device, max_new_tokens=max_new_tokens)
    if h.family != "neuronspark":
        raise UserError(f"per-frame traces of the {h.family} reference are not supported yet")
    dtype = torch.bfloat16 if bf16 else torch.float32
    cfg = h.config
    rec = _Recorder(cfg.K, populations)
    state = h.new_state(ids.shape[0], device)
    logits = h.forward(torch.as_tensor(ids), state, device=device, dtype=dtype, progress=False, probe=rec)
    meta = {"family": h.family, "config": dict(cfg.sizes()) if hasattr(cfg, "sizes") else {}, "frames": cfg.K,
            "checkpoint": str(src.path), "checksum": src.checksum(), "dtype": "bfloat16" if bf16 else "float32"}
    trace = Trace(meta, logits=logits.float().cpu().numpy())
    rec.into(trace)
    if max_new_tokens > 0:
        gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
        toks = h.generate(ids[0].tolist(), gen, device=device, dtype=dtype)
        trace.meta["greedy"] = {"prompt_row": 0, "max_new_tokens": max_new_tokens, "tokens": [int(t) for t in toks]}
    return trace


# ---- artifact stages ------------------------------------------------------------------------------

def lava_loihi_available() -> bool:
    try:
        return importlib.util.find_spec("lava.magma.core.model.nc") is not None
    except (ImportError, ValueError):
        return False


def _run_artifact(stage: str, src: Source, ids: np.ndarray, *, populations, max_new_tokens: int,
                  granularity: str = "fused", trace_generated: bool = False) -> Trace:
    g = src.graph
    meta = {"family": g.family, "config": dict(g.config), "frames": int(g.meta.get("frames") or
                                                                       (g.stages[0].frames if g.stages else 1)),
            "artifact": str(src.path), "checksum": src.checksum()}
    if src.manifest:
        meta["manifest"] = {k: v for k, v in src.manifest.items() if isinstance(v, (str, int, float, bool))}
    if g.family == "nord" and stage != "loihi2":       # ns_compile.verify.nord
        from ns_compile.verify import nord as NV
        if stage == "emulator":
            return NV.emulator_trace(Trace(meta), g, ids, max_new_tokens)
        return NV.lava_trace(Trace(meta), g, ids, "float" if stage == "lava-sim-float" else "fixed", max_new_tokens,
                             granularity=granularity, keep_generated=trace_generated)
    if stage == "emulator":
        raw = _emulator_raw(src, ids, max_new_tokens)
    elif stage in ("lava-sim-float", "lava-sim-fixed"):
        raw = _lava_raw(src, ids, "float" if stage == "lava-sim-float" else "fixed", max_new_tokens,
                        granularity=granularity, keep_generated=trace_generated)
    else:  # loihi2
        if not lava_loihi_available():
            raise UserError("stage loihi2 needs lava-loihi (Intel's INRC package) and a Loihi 2 system; "
                            "it is not installed here — use lava-sim-fixed, which is bit-exact to the chip model")
        raw = _lava_raw(src, ids, "fixed", max_new_tokens, backend="loihi2", granularity=granularity,
                        keep_generated=trace_generated)
    trace = Trace(meta)
    integer = bool(raw.get("integer", stage != "lava-sim-float")) and bool(getattr(g, "quantized", True))
    fill_from_integer_run(trace, g, raw, integer=integer)
    trace.meta["integer"] = integer
    if max_new_tokens > 0:
        trace.meta["greedy"] = {"prompt_row": 0, "max_new_tokens": max_new_tokens,
                                "tokens": [int(t) for t in raw.get("greedy", [])]}
    return trace


def _emulator_raw(src: Source, ids: np.ndarray, max_new_tokens: int = 0) -> dict:
    from ns_compile.verify.emulator_trace import run_emulator

    return run_emulator(src.graph, ids, max_new_tokens=max_new_tokens)


def _lava_raw(src: Source, ids: np.ndarray, mode: str, max_new_tokens: int = 0, backend: str = "lava-sim",
              granularity: str = "fused", keep_generated: bool = False) -> dict:
    """One Lava run per row (the backend runs batch 1): teacher-forced over the row's ids; row 0
    also generates `max_new_tokens` greedily in the same run (its trace is cut to the ids unless
    `keep_generated`, batch 1: then it covers every token the run processed)."""
    try:
        from ns_compile.backends.lava import run_artifact
    except ImportError as e:
        raise UserError(f"the Lava backend is not available ({e}); it needs lava-nc (Python 3.10 venv)",
                        src.path) from None
    B, T = ids.shape
    per_pop: dict[str, dict[str, list]] = {}
    logits, greedy = [], None
    for r in range(B):
        n_new = max_new_tokens if r == 0 else 0
        res = run_artifact(src.graph, ids[r].tolist(), mode=mode, max_new_tokens=n_new, temperature=0.0,
                           trace=True, backend=backend, granularity=granularity)
        if r == 0 and n_new:
            greedy = list(res["ids"])
        keep = len(res["trace"]) if keep_generated and B == 1 else T
        logits.append(np.asarray(res["logits"])[:keep])
        rows: dict[str, dict[str, list]] = {}
        for tok in res["trace"][:keep]:
            for _stage, pops in tok.items():
                for name, fields in pops.items():
                    slot = rows.setdefault(name, {})
                    for f, arr in fields.items():
                        f2 = "V" if f == "V" else ("spikes" if f in ("S", "spikes") else "out")
                        slot.setdefault(f2, []).append(np.asarray(arr))
        for name, fields in rows.items():
            dst = per_pop.setdefault(name, {})
            for f, toks in fields.items():
                if f == "out" and "V" in fields:
                    continue                       # a PLIF's payload is its V, shifted: keep V
                dst.setdefault(f, []).append(np.stack(toks))            # [T, K, n]
    pops = {name: {f: np.stack(rows_, axis=0) for f, rows_ in fields.items() if len(rows_) == B}
            for name, fields in per_pop.items()}                        # [B, T, K, n]
    return {"logits": np.stack(logits).astype(np.float32), "populations": pops, "saturation": {},
            "greedy": greedy or [], "integer": mode == "fixed"}


def fill_from_integer_run(trace: Trace, graph, raw: dict, *, integer: bool = True) -> Trace:
    """Turn an integer run into trace entries.

    raw = {"logits": float [B, T, V],
           "populations": {ir_name: {"V": int [B, T, K, n], "out": int [B, T, K, n], "spikes": bool [B, T, K, n]}},
           "saturation": {ir_name: {counter: int}},
           "host": {ir_name: int [B, T, n]}}           (per-token host values, optional)
    Fracs come from `Population.fmt` ("V" for the state, "P"/"out" for the output). With
    integer=False (Lava's floating-point models) the arrays are already float units.
    """
    if raw.get("logits") is not None:
        trace.logits = np.asarray(raw["logits"], dtype=np.float32)
    sat = raw.get("saturation") or {}
    for name, fields in (raw.get("populations") or {}).items():
        pop = graph.populations.get(name)
        key = canonical_key(pop, graph) if pop is not None else name
        kind = pop.kind if pop is not None else "?"
        fmt = dict(pop.fmt) if pop is not None else {}
        arrays, fr = {}, {}
        V = fields.get("V", fields.get("v"))
        if V is not None:
            V = np.asarray(V)
            if integer:
                f_v = int(fmt.get("V", fmt.get("f_V", 0)))
                arrays["v_int"], arrays["v"], fr["v"] = V, V.astype(np.float64) * 2.0 ** -f_v, f_v
            else:
                arrays["v"] = V
        O = fields.get("out", fields.get("P"))
        if O is not None and (V is None or kind not in ("plif_static", "plif_selective")):
            O = np.asarray(O)
            if integer:
                f_o = int(fields["frac_out"]) if "frac_out" in fields else output_frac(graph, pop)
                arrays["out_int"], arrays["out"], fr["out"] = O, O.astype(np.float64) * 2.0 ** -f_o, f_o
            else:
                arrays["out"] = O
        S = fields.get("spikes", fields.get("s"))
        if S is not None:
            arrays["spikes"] = np.asarray(S)
        trace.add(key, kind, fmt=fr, saturation=sat.get(name), **arrays)
    for name, val in (raw.get("host") or {}).items():
        key, frac = name, None
        if isinstance(val, dict):
            frac, val = val.get("frac"), val.get("value")
        val = np.asarray(val)
        if integer and val.dtype.kind in "iu" and frac is not None:
            trace.add(key, "host", fmt={"token": frac}, token_int=val, token=val.astype(np.float64) * 2.0 ** -frac)
        else:
            trace.add(key, "host", token=val)
    return trace


def output_frac(graph, pop) -> int:
    """Frac of a population's per-frame output (docs/fixed_point.md §3): gated_readout and
    accumulate f_F; product f_X1 + f_X2 − exp (its inputs' payload fracs); a PLIF its payload f_P."""
    f = pop.fmt
    if "out" in f:
        return int(f["out"])
    if pop.kind == "product":
        if "P" in f:
            return int(f["P"])
        srcs = [graph.populations[d.src].fmt.get("P") for d in graph.directs_into(pop.name)]
        if len(srcs) == 2 and None not in srcs:
            return int(srcs[0]) + int(srcs[1]) - int(f.get("exp", 0))
        raise ValueError(f"{pop.name}: cannot tell the product's frac (inputs' P fracs missing)")
    for k in ("F", "A", "P"):
        if k in f:
            return int(f[k])
    raise ValueError(f"{pop.name}: no output frac in fmt {f}")
