"""Run a (quantized) graph on Lava's CPU simulator, or on Loihi 2 through lava-loihi.

Isolation (docs/lava_backend.md, lava_loihi.md §2.4): every run happens in a *session* child
forked from the caller that starts its own process group (setsid); Lava forks its workers from
there. The caller waits on a pipe with a deadline (watchdog). On a worker failure the session
collects the worker tracebacks (SystemProcess exception pipes, plus Lava's INFO log, where the
runtime prints them), kills and reaps its workers and reports; on a timeout the caller kills the
whole process group. Either way the error is re-raised here as `LavaRunError` (a UserError)
carrying the worker traceback, and the caller checks that no process of the group is left.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import select
import signal
import time
import traceback

import numpy as np

from ns_compile.errors import UserError


class LavaRunError(UserError):
    """A Lava run failed (worker exception, timeout, missing hardware stack)."""


# ---------------------------------------------------------------------------------------------
# process-group helpers (no psutil: /proc)
# ---------------------------------------------------------------------------------------------
def _proc_stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2])}


def group_members(pgid: int, include_zombies: bool = False) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st and st["pgrp"] == pgid and (include_zombies or st["state"] != "Z"):
                out.append(int(d))
    return out


def descendants(pid: int | None = None) -> list[int]:
    """Live (non-zombie) descendants of `pid` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    par = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st and st["state"] != "Z":
                par[int(d)] = st["ppid"]
    seen, todo = [], [pid]
    while todo:
        x = todo.pop()
        for c, pp in par.items():
            if pp == x and c not in seen:
                seen.append(c)
                todo.append(c)
    return seen


def _kill_group(pgid: int, timeout: float = 5.0) -> list[int]:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = group_members(pgid)
        if not left:
            return []
        time.sleep(0.05)
    return group_members(pgid)


# ---------------------------------------------------------------------------------------------
# session child
# ---------------------------------------------------------------------------------------------
def _run_isolated(fn, args: tuple, timeout_s: float):
    """fn(*args) in a forked child in its own process group; returns its result or raises."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                          # --- session child ---
        code = 0
        try:
            os.close(rfd)
            os.setsid()
            try:
                res = ("ok", fn(*args))
            except BaseException as e:                    # noqa: BLE001
                msg = e.format() if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                tb = getattr(e, "worker_traceback", None) or traceback.format_exc()
                res = ("err", (type(e).__name__, msg, tb, isinstance(e, UserError)))
            data = pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(wfd, "wb") as w:
                w.write(data)
        except BaseException:                             # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    # --- caller ---
    os.close(wfd)
    pgid = pid                                            # setsid makes the child its group leader
    chunks = []
    deadline = time.monotonic() + float(timeout_s)
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            r, _, _ = select.select([rfd], [], [], min(left, 1.0))
            if r:
                b = os.read(rfd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
    finally:
        os.close(rfd)
    if timed_out:
        stray = _kill_group(pgid)
        _reap(pid)
        raise LavaRunError(f"Lava run timed out after {timeout_s:.0f} s; all its worker processes were killed"
                           + (f" (still alive: {stray})" if stray else ""))
    _reap(pid, wait=10.0)
    stray = _kill_group(pgid)                             # safety net: normally nothing is left
    if not chunks:
        raise LavaRunError("Lava session ended without a result (killed?)" + (f"; stray {stray}" if stray else ""))
    status, payload = pickle.loads(b"".join(chunks))
    if status == "ok":
        return payload
    name, msg, tb, is_user = payload
    if is_user and name != "LavaRunError":
        raise UserError(msg)
    err = LavaRunError(f"{msg}\n--- Lava worker traceback ---\n{tb}" if tb else msg)
    err.worker_traceback = tb
    raise err


def _reap(pid: int, wait: float = 5.0):
    end = time.monotonic() + wait
    while True:
        try:
            p, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if p:
            return
        if time.monotonic() > end:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            return
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# inside the session: compile, run, stream
# ---------------------------------------------------------------------------------------------
class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.buf = io.StringIO()

    def emit(self, record):
        try:
            self.buf.write(self.format(record) + "\n")
        except Exception:                                  # noqa: BLE001
            pass


def _configure_logging() -> _LogCapture:
    """Lava prints a worker's traceback only with log.info (runtime.py); capture it."""
    cap = _LogCapture()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(cap)
    root.setLevel(logging.INFO)
    logging.getLogger("lava").setLevel(logging.INFO)
    return cap


def _worker_failure(runtime, cap: _LogCapture, grace_s: float = 5.0) -> str | None:
    """Traceback text of failed Lava workers, or None while all are alive. When a worker is seen
    dead, the others get `grace_s` to deliver their exception (the failing model may still be
    unwinding while a runtime service has already exited cleanly)."""
    mi = getattr(runtime, "_messaging_infrastructure", None)
    actors = list(getattr(mi, "actors", []) or [])
    dead = [a for a in actors if not a.is_alive()]
    if not dead:
        return None
    end = time.monotonic() + grace_s
    while True:
        tbs = []
        for a in actors:
            try:
                exc = a.exception
            except Exception:                              # noqa: BLE001
                exc = None
            if exc:
                tbs.append(exc[1])
        log = cap.buf.getvalue()
        if not tbs and "Traceback" in log:
            tbs.append(log[log.index("Traceback"):])
        if tbs or time.monotonic() > end:
            break
        time.sleep(0.05)
    return "\n".join(tbs) if tbs else f"a Lava worker exited (exit codes {[a.exitcode for a in dead]})"


def _kill_workers(runtime):
    mi = getattr(runtime, "_messaging_infrastructure", None)
    for a in list(getattr(mi, "actors", []) or []):
        try:
            if a.is_alive():
                os.kill(a.pid, signal.SIGKILL)
        except Exception:                                  # noqa: BLE001
            pass
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except Exception:                                  # noqa: BLE001
            pass
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            p, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if p == 0:
            if not descendants():
                break
            time.sleep(0.02)


class _Failed(Exception):
    pass


def _recv(ext, runtime, cap, deadline):
    """Non-blocking drain of one item from an Extractor, watching the workers."""
    port = ext.out_port.external_pipe_csp_recv_port
    while True:
        if port._queue.qsize() > 0:
            return np.asarray(port.recv())
        tb = _worker_failure(runtime, cap)
        if tb is not None:
            raise _Failed(tb)
        if time.monotonic() > deadline:
            raise _Failed("the session's own deadline passed while waiting for Lava output")
        time.sleep(0.0005)


def _start_session(net, fixed: bool, opts: dict):
    """The common start of a Lava generation session (NeuronSpark and Nord): run config, the
    seeded sampler generator, the deadline, and the runtime created (compile time measured)."""
    import torch
    run_cfg = _run_cfg(opts["backend"], fixed, net.model_map)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0 if opts["seed"] is None else int(opts["seed"]))
    deadline = time.monotonic() + float(opts["timeout_s"])
    t0 = time.perf_counter()
    net.host.create_runtime(run_cfg=run_cfg)
    return run_cfg, gen, deadline, net.host.runtime, time.perf_counter() - t0


def _session(graph, prompt_ids, opts):
    import torch
    torch.set_num_threads(1)
    cap = _configure_logging()
    from lava.magma.core.run_conditions import RunSteps

    from ns_compile.backends.lava.build import build_network
    from ns_compile.backends.lava.schedule import make_plan
    from ns_compile.sim.host import sample

    fixed = opts["mode"] == "fixed"
    plan = make_plan(graph, opts["granularity"])
    net = build_network(graph, plan, fixed, trace=opts["trace"], host_fn=opts.get("host_fn"))
    run_cfg, gen, deadline, runtime, t_compile = _start_session(net, fixed, opts)
    host = net.host
    n_new = int(opts["max_new_tokens"])
    n_tokens = len(prompt_ids) + max(n_new - 1, 0)
    T = plan.period
    traces = [] if opts["trace"] else None
    new_ids: list[int] = []
    all_logits = []
    try:
        host.run(condition=RunSteps(num_steps=n_tokens * T, blocking=False), run_cfg=run_cfg)
        t1 = time.perf_counter()
        feed = list(prompt_ids)
        for n in range(n_tokens):
            tok = feed[n] if n < len(feed) else new_ids[-1]
            net.injector.send(np.array([float(tok)]))
            for _ in range(T - 1):
                net.injector.send(np.zeros(1))
            per_step = {}
            logits = None
            for r in range(T):
                x = _recv(net.extractor, runtime, cap, deadline)
                if r == plan.logits_step:
                    logits = x
                if traces is not None:
                    for key, e in net.trace_extractors.items():
                        per_step.setdefault(key, []).append(_recv(e, runtime, cap, deadline))
            all_logits.append(logits.astype(np.float32))
            if traces is not None:
                traces.append(_token_trace(net, plan, per_step))
            if n >= len(prompt_ids) - 1 and len(new_ids) < n_new:
                lg = torch.from_numpy(logits.astype(np.float32)).reshape(1, -1)
                new_ids.append(int(sample(lg, opts["temperature"], opts["top_k"] or 0, gen)[0]))
        t_run = time.perf_counter() - t1
        host.wait()
        host.stop()
    except _Failed as f:
        _kill_workers(runtime)
        e = LavaRunError(f"a Lava worker failed ({opts['backend']}, {opts['granularity']}, {opts['mode']})")
        e.worker_traceback = str(f)
        raise e
    except BaseException:
        _kill_workers(runtime)
        raise
    return {"ids": new_ids, "logits": np.stack(all_logits) if all_logits else None, "trace": traces,
            "steps_per_token": T, "n_tokens": n_tokens, "compile_s": t_compile, "run_s": t_run,
            "ms_per_token": 1e3 * t_run / max(n_tokens, 1),
            "processes": len(getattr(runtime._messaging_infrastructure, "actors", []))}


def _token_trace(net, plan, per_step):
    """{stage: {population: {"V": [K, n], "P": [K, n]}}} for one token."""
    out = {}
    for (i, j), rows in per_step.items():
        spec = net.specs[i]
        sp = plan.stages[i]
        p = spec.pops[j]
        lo = sp.offset + sp.depth[p.name]
        arr = np.stack(rows[lo:lo + spec.frames])
        dt = np.int64 if spec.fixed else np.float64
        arr = arr.astype(dt) if spec.fixed else arr
        d = out.setdefault(spec.name, {})
        if arr.shape[1] == 2 * p.size:
            d[p.name] = {"V": arr[:, :p.size], "P": arr[:, p.size:]}
        else:
            d[p.name] = {"P": arr}
    return out


def _run_cfg(backend: str, fixed: bool, model_map: dict):
    tag = "fixed_pt" if fixed else "floating_pt"
    if backend == "loihi2":
        from ns_compile.backends.lava.loihi2 import hw_run_cfg
        return hw_run_cfg(tag, model_map)
    from lava.magma.core.run_configs import Loihi2SimCfg
    return Loihi2SimCfg(select_tag=tag, exception_proc_model_map=model_map, loglevel=logging.INFO)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def _load(graph_or_path, float_graph: bool = False):
    from ns_compile.ir import Graph
    if isinstance(graph_or_path, Graph):
        return graph_or_path
    try:
        from ns_compile.artifact import load_artifact
    except ImportError as e:
        raise UserError("the artifact loader (ns_compile.artifact) is not available", graph_or_path) from e
    g, _manifest = load_artifact(graph_or_path, float_graph=float_graph)
    return g


def run_artifact(graph_or_path, prompt_ids, *, mode: str = "fixed", granularity: str = "fused",
                 max_new_tokens: int = 16, temperature: float = 0.0, top_k: int | None = None,
                 seed: int | None = 0, timeout_s: float = 600.0, trace: bool = False,
                 backend: str = "lava-sim", host_fn=None, return_info: bool = False):
    """Generate with the graph on Lava. Returns the new token ids; with trace=True or
    return_info=True returns a dict: ids, logits [n_tokens, V] (float32), trace (per token:
    {stage: {population: {"V", "P"}}} integer states of every frame, the emulator's layout),
    steps_per_token, ms_per_token, compile_s, processes."""
    if mode not in ("fixed", "float"):
        raise UserError(f"unknown mode {mode!r} (fixed | float)")
    if backend not in ("lava-sim", "loihi2"):
        raise UserError(f"unknown backend {backend!r} (lava-sim | loihi2)")
    if backend == "loihi2":
        from ns_compile.backends.lava.loihi2 import require_lava_loihi
        require_lava_loihi()
    graph = _load(graph_or_path, float_graph=(mode == "float"))
    if graph.meta.get("shape_only"):
        raise UserError("a shape-only graph (no weights) cannot run on Lava")
    if mode == "fixed" and not graph.quantized:
        raise UserError("fixed mode needs a quantized graph (run `ns-compile compile` first)")
    if mode == "float" and graph.quantized:
        raise UserError("float mode needs the float IR (the graph is quantized)")
    prompt_ids = [int(t) for t in prompt_ids]
    if not prompt_ids:
        raise UserError("empty prompt")
    try:
        import lava.magma  # noqa: F401
    except Exception as e:                                # noqa: BLE001
        raise UserError(f"lava-nc is not importable ({e}); install the [lava] extra in a Python 3.10 venv") from e
    opts = {"mode": mode, "granularity": granularity, "max_new_tokens": max_new_tokens,
            "temperature": temperature, "top_k": top_k, "seed": seed, "timeout_s": timeout_s,
            "trace": trace, "backend": backend, "host_fn": host_fn}
    fn = _session
    if graph.family == "nord":                    # docs/fixed_point.md §7 (ns_compile.backends.lava.nord)
        from ns_compile.backends.lava.nord import nord_session as fn
    res = _run_isolated(fn, (graph, prompt_ids, opts), timeout_s + 30.0)
    if trace or return_info:
        return res
    return res["ids"]
