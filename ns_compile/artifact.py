"""The compiled artifact: one self-contained, versioned, deterministic file.

An uncompressed zip (fixed timestamps, fixed entry order) holding:

| entry | content |
|---|---|
| `manifest.json` | format, format_version, fixed_point_version, compiler version, source (file name + sha256 of the weights), options, sha256 of every other entry |
| `graph.json` | the quantized IR Graph; every array is `{"$tensor": key}` into `tensors.safetensors` |
| `tensors.safetensors` | weights (mantissas), parameters, host matrices, LUTs (`luts.sigmoid`, `luts.softplus`) |
| `float_graph.json`, `float_tensors.safetensors` | the float IR (folded, before quantization), for `run --float` |
| `calibration_report.json` | the quantization report (ns_compile.quant) |
| `graph.onnx` | the graph as ONNX, custom op domain "ns_compile" (for Netron; shapes and formats, no weights) |
| `tokenizer/…` | the checkpoint's tokenizer files, when it has them |
| `partition.json` | the partitioner's result, with `compile --hardware` |

`load_artifact(path) -> (Graph, manifest)` checks the format version and every checksum.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from ns_compile.errors import UserError
from ns_compile.ir import Direct, Graph, HostOp, Population, Stage, Synapse

FORMAT = "ns-compile-artifact"
FORMAT_VERSION = 1
FIXED_POINT_VERSION = 5          # docs/fixed_point.md (v5)
_DATE = (1980, 1, 1, 0, 0, 0)


# ---- Graph <-> JSON + tensors ---------------------------------------------------------------------

class _Packer:
    def __init__(self):
        self.tensors: dict[str, np.ndarray] = {}
        self._ids: dict[int, str] = {}

    def pack(self, v, key: str):
        if isinstance(v, np.ndarray):
            k = self._ids.get(id(v))
            if k is None:
                k = key
                self._ids[id(v)] = k
                self.tensors[k] = np.ascontiguousarray(v)
            return {"$tensor": k}
        if isinstance(v, dict):
            return {str(kk): self.pack(vv, f"{key}.{kk}") for kk, vv in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.pack(vv, f"{key}.{i}") for i, vv in enumerate(v)]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return float(v)
        if isinstance(v, (np.bool_,)):
            return bool(v)
        return v


def _unpack(v, tensors):
    if isinstance(v, dict):
        if set(v) == {"$tensor"}:
            return tensors[v["$tensor"]]
        return {k: _unpack(vv, tensors) for k, vv in v.items()}
    if isinstance(v, list):
        return [_unpack(vv, tensors) for vv in v]
    return v


def graph_to_json(g: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    pk = _Packer()
    d = {
        "family": g.family, "config": pk.pack(g.config, "config"), "quantized": g.quantized,
        "populations": [{"name": p.name, "kind": p.kind, "size": p.size, "stage": p.stage, "depth": p.depth,
                         "params": pk.pack(p.params, f"pop.{p.name}"), "fmt": pk.pack(p.fmt, "x"),
                         "meta": pk.pack(p.meta, f"popmeta.{p.name}")} for p in g.populations.values()],
        "synapses": [{"name": s.name, "src": s.src, "dst": s.dst, "dst_port": s.dst_port,
                      "weight": None if s.weight is None else pk.pack(s.weight, f"syn.{s.name}"),
                      "input_kind": s.input_kind, "shape": list(s.shape), "fmt": pk.pack(s.fmt, "x"),
                      "meta": pk.pack(s.meta, f"synmeta.{s.name}")} for s in g.synapses.values()],
        "directs": [{"src": x.src, "dst": x.dst, "dst_port": x.dst_port} for x in g.directs],
        "host_ops": [{"name": h.name, "kind": h.kind, "inputs": h.inputs, "outputs": h.outputs,
                      "params": pk.pack(h.params, f"host.{h.name}"), "fmt": pk.pack(h.fmt, "x"),
                      "meta": pk.pack(h.meta, f"hostmeta.{h.name}")} for h in g.host_ops.values()],
        "stages": [_stage_json(s) for s in g.stages],
        "program": list(g.program),
        "meta": pk.pack(g.meta, "meta"),
    }
    return d, pk.tensors


def _stage_json(s: Stage) -> dict:
    d = {"name": s.name, "frames": s.frames, "drive": s.drive, "drive_targets": s.drive_targets,
         "populations": s.populations, "readout": s.readout, "after": s.after}
    if s.drive_per_frame:                      # Nord fields (§7) only when used
        d["drive_per_frame"] = True
    if s.readouts:
        d["readouts"] = list(s.readouts)
    return d


def graph_from_json(d: dict, tensors: dict[str, np.ndarray]) -> Graph:
    g = Graph(family=d["family"], config=_unpack(d["config"], tensors), quantized=d["quantized"])
    for p in d["populations"]:
        g.add_population(Population(p["name"], p["kind"], p["size"], p["stage"], _unpack(p["params"], tensors),
                                    p["depth"], _unpack(p["fmt"], tensors), _unpack(p["meta"], tensors)))
    for s in d["synapses"]:
        w = None if s["weight"] is None else _unpack(s["weight"], tensors)
        g.add_synapse(Synapse(s["name"], s["src"], s["dst"], s["dst_port"], w, s["input_kind"], tuple(s["shape"]),
                              _unpack(s["fmt"], tensors), _unpack(s["meta"], tensors)))
    g.directs = [Direct(x["src"], x["dst"], x["dst_port"]) for x in d["directs"]]
    for h in d["host_ops"]:
        g.add_host_op(HostOp(h["name"], h["kind"], h["inputs"], h["outputs"], _unpack(h["params"], tensors),
                             _unpack(h["fmt"], tensors), _unpack(h["meta"], tensors)))
    g.stages = [Stage(**s) for s in d["stages"]]
    g.program = list(d["program"])
    g.meta = _unpack(d["meta"], tensors)
    return g


def _safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save
    return save({k: tensors[k] for k in sorted(tensors)})


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---- writing ----------------------------------------------------------------------------------------

def write_artifact(path: str | Path, graph: Graph, *, float_graph: Graph | None = None, report: dict | None = None,
                   source: dict | None = None, options: dict | None = None, tokenizer_dir: Path | None = None,
                   partition: dict | None = None, onnx_bytes: bytes | None = None, _fail_after: int | None = None):
    """Write the artifact atomically (ns_compile.atomic.atomic_path): same inputs → same bytes."""
    from ns_compile import __version__
    from ns_compile.atomic import atomic_path

    entries: list[tuple[str, bytes]] = []
    gj, gt = graph_to_json(graph)
    entries.append(("graph.json", _json_bytes(gj)))
    entries.append(("tensors.safetensors", _safetensors_bytes(gt)))
    if float_graph is not None:
        fj, ft = graph_to_json(float_graph)
        ft = {k: (v.astype(np.float32) if v.dtype == np.float64 and v.ndim >= 2 else v) for k, v in ft.items()}
        entries.append(("float_graph.json", _json_bytes(fj)))
        entries.append(("float_tensors.safetensors", _safetensors_bytes(ft)))
    if report is not None:
        entries.append(("calibration_report.json", _json_bytes(report)))
    if onnx_bytes is not None:
        entries.append(("graph.onnx", onnx_bytes))
    if partition is not None:
        entries.append(("partition.json", _json_bytes(partition)))
    if tokenizer_dir is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            f = Path(tokenizer_dir) / name
            if f.is_file():
                entries.append((f"tokenizer/{name}", f.read_bytes()))
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "fixed_point_version": FIXED_POINT_VERSION,
                "compiler": {"name": "ns-compile", "version": __version__}, "family": graph.family,
                "source": source or {}, "options": options or {},
                "entries": {n: hashlib.sha256(b).hexdigest() for n, b in entries}}
    entries.insert(0, ("manifest.json", _json_bytes(manifest)))
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for i, (name, data) in enumerate(entries):
                if _fail_after is not None and i >= _fail_after:
                    raise RuntimeError("simulated failure while writing the artifact")
                info = zipfile.ZipInfo(name, date_time=_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                info.create_system = 3
                z.writestr(info, data)
    return manifest


# ---- reading ----------------------------------------------------------------------------------------

class Artifact:
    """An opened artifact: manifest, entries read and verified on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError("no such file", self.path)
        if self.path.is_dir():
            raise UserError("is a directory, expected an ns-compile artifact file", self.path)
        try:
            self._z = zipfile.ZipFile(self.path, "r")
            names = self._z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise UserError(f"not an ns-compile artifact (truncated or corrupt?): {e}", self.path) from None
        if "manifest.json" not in names:
            raise UserError("not an ns-compile artifact: no manifest.json", self.path)
        try:
            self.manifest = json.loads(self._read_raw("manifest.json"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"corrupt manifest.json ({e})", self.path) from None
        m = self.manifest
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise UserError("not an ns-compile artifact (manifest format)", self.path)
        if m.get("format_version") != FORMAT_VERSION:
            raise UserError(f"artifact format version {m.get('format_version')!r} is not supported by this "
                            f"ns-compile (reads version {FORMAT_VERSION}); recompile the checkpoint", self.path)
        if m.get("fixed_point_version") != FIXED_POINT_VERSION:
            raise UserError(f"artifact uses fixed-point contract v{m.get('fixed_point_version')!r}, this ns-compile "
                            f"implements v{FIXED_POINT_VERSION}; recompile the checkpoint", self.path)
        missing = [n for n in m.get("entries", {}) if n not in names]
        if missing:
            raise UserError(f"artifact is missing {', '.join(missing)} (truncated or corrupt?)", self.path)

    def _read_raw(self, name: str) -> bytes:
        try:
            return self._z.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as e:  # CRC errors are BadZipFile
            raise UserError(f"cannot read {name} from the artifact (truncated or corrupt?): {e}", self.path) from None

    def has(self, name: str) -> bool:
        return name in self.manifest.get("entries", {})

    def read(self, name: str) -> bytes:
        data = self._read_raw(name)
        want = self.manifest["entries"].get(name)
        if want is None:
            raise UserError(f"artifact has no entry {name}", self.path)
        if hashlib.sha256(data).hexdigest() != want:
            raise UserError(f"checksum mismatch for {name}: the artifact is corrupt", self.path)
        return data

    def json(self, name: str):
        return json.loads(self.read(name))

    def _graph(self, gname: str, tname: str) -> Graph:
        from safetensors.numpy import load
        try:
            tensors = load(self.read(tname))
            return graph_from_json(self.json(gname), tensors)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot decode the graph in the artifact: {type(e).__name__}: {e}", self.path) from None

    def graph(self) -> Graph:
        return self._graph("graph.json", "tensors.safetensors")

    def float_graph(self) -> Graph:
        if not self.has("float_graph.json"):
            raise UserError("this artifact holds no float graph (needed for --float)", self.path)
        return self._graph("float_graph.json", "float_tensors.safetensors")

    def tokenizer(self):
        """The stored tokenizer (ns_compile.tokenizer.Tokenizer) or None."""
        if not self.has("tokenizer/tokenizer.json"):
            return None
        import tempfile

        from ns_compile.tokenizer import Tokenizer
        d = Path(tempfile.mkdtemp(prefix="ns-tok-"))
        for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if self.has(f"tokenizer/{n}"):
                (d / n).write_bytes(self.read(f"tokenizer/{n}"))
        return Tokenizer.from_dir(d)


def load_artifact(path: str | Path, *, float_graph: bool = False) -> tuple[Graph, dict]:
    """(Graph, manifest) of an artifact; the quantized graph, or the float IR with float_graph=True.
    Raises UserError for another format version, a corrupt or truncated file."""
    a = Artifact(path)
    return (a.float_graph() if float_graph else a.graph()), a.manifest


# ---- ONNX view --------------------------------------------------------------------------------------

def graph_to_onnx(g: Graph) -> bytes:
    """The graph as ONNX for viewers (Netron): one node per host op, population and synapse group,
    custom domain "ns_compile"; attributes carry sizes, fracs and bits (no weight data)."""
    import onnx
    from onnx import TensorProto, helper

    def attrs(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, (bool, np.bool_)):
                out[k] = int(v)
            elif isinstance(v, (int, np.integer)):
                out[k] = int(v)
            elif isinstance(v, (float, np.floating)):
                out[k] = float(v)
            elif isinstance(v, str):
                out[k] = v
        return out

    if g.family == "nord":
        return _nord_onnx(g)
    nodes = []
    H = "ids"
    hcount = 0
    cur_drive = {}
    frames = {}
    for name in g.program:
        if name in g.host_ops:
            op = g.host_ops[name]
            if op.kind == "embedding":
                ins, outs = ["ids"], [f"H{hcount}"]
            elif op.kind == "rmsnorm_drive":
                ins, outs = [H], [f"{op.meta.get('stage')}.drive"]
                cur_drive[op.meta.get("stage")] = outs[0]
            elif op.kind == "ponder_residual":
                ins, outs = [H, frames[op.meta["stage"]]], [f"H{hcount + 1}"]
            elif op.kind == "decode":
                ins, outs = [frames[op.meta["stage"]]], ["Y"]
            elif op.kind == "lm_head":
                ins, outs = ["Y"], ["logits"]
            else:
                ins, outs = ["logits"], ["next_id"]
            if outs and outs[0].startswith("H"):
                H = outs[0]
                hcount += 1
            nodes.append(helper.make_node(op.kind, ins, outs, name=name, domain="ns_compile", **attrs(op.fmt)))
        else:
            st = g.stage(name)
            for pn in st.populations:
                p = g.populations[pn]
                ins = []
                if pn in st.drive_targets:
                    ins.append(cur_drive[name])
                for s in g.inputs_of(pn):
                    nodes.append(helper.make_node("Dense", [f"{s.src}.out"], [f"{s.name}.A"], name=s.name,
                                                  domain="ns_compile", fan_in=s.fan_in, fan_out=s.fan_out,
                                                  port=s.dst_port, **attrs(s.fmt),
                                                  delay=int(s.meta.get("delay", 0))))
                    ins.append(f"{s.name}.A")
                for d in g.directs_into(pn):
                    ins.append(f"{d.src}.out")
                nodes.append(helper.make_node(p.kind, ins, [f"{pn}.out"], name=pn, domain="ns_compile", size=p.size,
                                              depth=p.depth, frames=st.frames, **attrs(p.fmt)))
            frames[name] = f"{st.readout}.out"
    D = int(g.config.get("D", 0))
    V = int(g.config.get("vocab_size", 0))
    graph = helper.make_graph(nodes, f"{g.family}", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", V]),
                               helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["B", D])])
    model = helper.make_model(graph, producer_name="ns-compile", producer_version="1",
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ns_compile", 1)])
    return model.SerializeToString(deterministic=True)


def _nord_onnx(g: Graph) -> bytes:
    """ONNX view of a Nord graph (docs/fixed_point.md §7): host ops chained through the per-frame
    residual stream, host-fed synapse groups reading the drive op's output, recurrent cascades."""
    import onnx  # noqa: F401
    from onnx import TensorProto, helper

    def attrs(d: dict) -> dict:
        return {k: (int(v) if isinstance(v, (bool, np.bool_, int, np.integer)) else v) for k, v in d.items()
                if isinstance(v, (bool, np.bool_, int, np.integer, float, str))}

    nodes, cur, last = [], "ids", {}
    for name in g.program:
        if name in g.host_ops:
            op = g.host_ops[name]
            ins = [cur] + [f"{p}.out" for p in (g.stage(op.meta["stage"]).host_readouts()
                                                if op.meta.get("stage") and op.kind not in
                                                ("nord_layernorm", "nord_gain_drive", "nord_encoder") else [])]
            out = f"{name}.out"
            nodes.append(helper.make_node(op.kind, ins, [out], name=name, domain="ns_compile", **attrs(op.fmt)))
            if op.kind in ("nord_layernorm", "nord_gain_drive", "nord_encoder"):
                last[op.meta["stage"]] = out
            else:
                cur = out
        else:
            st = g.stage(name)
            for pn in st.populations:
                p = g.populations[pn]
                ins = [last[name]] if pn in st.drive_targets else []
                for s in g.inputs_of(pn):
                    src = f"{s.src[5:]}.out" if s.src.startswith("host:") else f"{s.src}.out"
                    if s.src == pn:
                        src = f"{pn}.prev"
                    nodes.append(helper.make_node("Dense", [src], [f"{s.name}.A"], name=s.name, domain="ns_compile",
                                                  fan_in=s.fan_in, fan_out=s.fan_out, port=s.dst_port,
                                                  input_kind=s.input_kind, **attrs(s.fmt)))
                    ins.append(f"{s.name}.A")
                nodes.append(helper.make_node(p.kind, ins, [f"{pn}.out"], name=pn, domain="ns_compile", size=p.size,
                                              depth=p.depth, frames=st.frames, **attrs(p.fmt)))
    V = int(g.config.get("vocab_size", 0))
    graph = helper.make_graph(nodes, "nord", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B"])],
                              [helper.make_tensor_value_info("lm_head.out", TensorProto.FLOAT, ["B", V])])
    model = helper.make_model(graph, producer_name="ns-compile", producer_version="1",
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ns_compile", 1)])
    return model.SerializeToString(deterministic=True)
