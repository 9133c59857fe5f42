"""Crash handling: a failing Lava worker gives a clear error with its traceback, in bounded
time, and leaves no process behind; a hung session is killed by the watchdog; the loihi2 backend
without lava-loihi is a UserError, never Lava's NameError."""
from __future__ import annotations

import os
import time

import pytest
from conftest import need_lava
from test_lava_graphs import tiny_ns_graph

pytestmark = pytest.mark.lava


def _no_strays():
    from ns_compile.backends.lava.runner import descendants
    end = time.monotonic() + 5
    while descendants() and time.monotonic() < end:
        time.sleep(0.05)
    return descendants()


def test_worker_exception_surfaces_traceback_and_cleans_up():
    need_lava()
    from ns_compile.backends.lava import run_artifact
    from ns_compile.backends.lava.runner import LavaRunError
    from ns_compile.sim.host import run_host_op

    calls = {"n": 0}

    def bad_host(op, inputs, cfg):             # runs inside the host worker process
        calls["n"] += 1
        if op.kind == "ponder_residual" and calls["n"] > 6:
            raise ValueError("injected host failure 1234")
        return run_host_op(op, inputs, cfg)

    for gran in ("fused", "population"):
        t0 = time.monotonic()
        with pytest.raises(LavaRunError) as ei:
            run_artifact(tiny_ns_graph(), [1, 2, 3, 4], granularity=gran, max_new_tokens=4, timeout_s=60,
                         host_fn=bad_host)
        assert time.monotonic() - t0 < 50
        msg = str(ei.value)
        assert "a Lava worker failed" in msg
        assert "injected host failure 1234" in msg and "Traceback" in msg and "bad_host" in msg
        assert _no_strays() == []


def test_failing_process_model_in_a_lava_graph():
    """A test-only Process whose model raises in run_spk, wired into a small Lava graph."""
    need_lava()
    from ns_compile.backends.lava.runner import LavaRunError, _run_isolated

    def fn():
        import numpy as np
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.io.injector import Injector, PyLoihiInjectorModel

        from ns_compile.backends.lava.models import PyFailingProbe
        from ns_compile.backends.lava.processes import FailingProbe
        from ns_compile.backends.lava.runner import _configure_logging, _Failed, _LogCapture, _worker_failure
        _configure_logging()
        inj, p = Injector(shape=(1,), buffer_size=20), FailingProbe(shape=(1,), fail_at=3)
        inj.out_port.connect(p.a_in)
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={inj: PyLoihiInjectorModel,
                                                                             p: PyFailingProbe})
        p.run(condition=RunSteps(num_steps=10, blocking=False), run_cfg=cfg)
        for _ in range(10):
            inj.send(np.ones(1))
        end = time.monotonic() + 20
        while time.monotonic() < end:
            tb = _worker_failure(p.runtime, _LogCapture())
            if tb:
                from ns_compile.backends.lava.runner import _kill_workers
                _kill_workers(p.runtime)
                e = LavaRunError("probe failed")
                e.worker_traceback = tb
                raise e
            time.sleep(0.01)
        raise _Failed("no failure seen")

    t0 = time.monotonic()
    with pytest.raises(LavaRunError, match="deliberate failure at step 3") as ei:
        _run_isolated(fn, (), 40)
    assert "PyFailingProbe" in str(ei.value) or "run_spk" in str(ei.value)
    assert time.monotonic() - t0 < 35
    assert _no_strays() == []


def test_watchdog_kills_a_hung_session_and_its_children():
    from ns_compile.backends.lava.runner import LavaRunError, _run_isolated

    def hang():
        # a session that forks workers and then hangs (as Lava's stop() can)
        for _ in range(3):
            if os.fork() == 0:
                time.sleep(300)
                os._exit(0)
        time.sleep(300)

    t0 = time.monotonic()
    with pytest.raises(LavaRunError, match="timed out"):
        _run_isolated(hang, (), 2.0)
    assert time.monotonic() - t0 < 15
    assert _no_strays() == []


def test_loihi2_without_lava_loihi_is_user_error():
    from ns_compile.backends.lava import lava_loihi_missing, run_artifact
    from ns_compile.errors import UserError
    if lava_loihi_missing() is None:
        pytest.skip("lava-loihi is installed here")
    with pytest.raises(UserError, match="lava-loihi") as ei:
        run_artifact(tiny_ns_graph(), [1], backend="loihi2")
    assert "INRC" in str(ei.value)
    assert not isinstance(ei.value, NameError)


def test_custom_microcode_listing():
    from ns_compile.backends.lava import custom_microcode_processes
    rows = custom_microcode_processes(tiny_ns_graph())
    kinds = {r["neuron_type"]: r for r in rows}
    assert set(kinds) == {"plif_static", "plif_selective", "gated_readout", "accumulate"}   # product is stock
    assert kinds["plif_selective"]["doc"].endswith("§3.2")
    assert kinds["plif_static"]["populations"] == 5
