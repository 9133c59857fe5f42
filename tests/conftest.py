"""Shared test helpers.

Fixtures from the upstream projects live in ../shared/fixtures (never copied into the repo).
Where ../shared is absent a test that needs it is skipped with the reason, except under
CI=true, where a missing ../shared is an error: CI must prove the fixtures were really used.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NS_COMPILE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def need_fixture(*parts: str) -> Path:
    p = FIXTURES.joinpath(*parts)
    if not p.exists():
        msg = f"fixture {p} not found (tests read upstream fixtures from ../shared/fixtures)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def have_lava() -> bool:
    try:
        import lava.magma  # noqa: F401
    except Exception:
        return False
    return True


def need_lava():
    """Lava is part of the README set-up: under CI=true its absence is a failure, not a skip."""
    if not have_lava():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("lava-nc is not importable; the README set-up installs it")
        pytest.skip("lava-nc not installed (Python 3.10 venv from the README installs it)")


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: a second intra-op thread only adds jitter on a shared 2-core machine."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ns_tiny() -> Path:
    """The upstream NeuronSpark conformance checkpoint (HF layout)."""
    return need_fixture("neuronspark-tiny", "checkpoint")


@pytest.fixture
def ns_tiny_dir() -> Path:
    return need_fixture("neuronspark-tiny")


@pytest.fixture
def nord_fixtures() -> Path:
    return need_fixture("nord")
