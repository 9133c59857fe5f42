"""Verification across stages: traces, stage runners, metrics and the comparison report.

    reference ─┐
    emulator  ─┼─ Trace (one .safetensors file per stage and input batch) ─▶ compare_traces ─▶ report
    lava-sim  ─┘

See docs/compare.md. Nothing in this package imports Lava at import time.
"""
from ns_compile.verify.metrics import compare_traces  # noqa: F401
from ns_compile.verify.trace import STAGES, Trace  # noqa: F401
