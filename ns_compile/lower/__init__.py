"""Family → IR lowering (docs/architecture.md). Constant folding of static factors happens here.

`lower_handle(handle, weights=True)` dispatches on the frontend's family.
"""
from __future__ import annotations

from ns_compile.errors import UserError


def lower_handle(handle, *, weights: bool = True, dtype=None):
    """The float IR Graph of a loaded checkpoint (`weights=False` or a config-only handle: a
    shape-only graph, Synapse.weight None)."""
    if handle.family == "neuronspark":
        from ns_compile.lower.neuronspark import lower_neuronspark
        w = handle.weights() if (weights and handle.has_weights) else None
        return lower_neuronspark(handle.config, w)
    if handle.family == "nord":
        from ns_compile.lower.nord import lower_nord
        sd = handle._sd if (weights and handle.has_weights) else None
        if getattr(handle.config, "version", "v3") == "v4":
            from ns_compile.lower.nord_v4 import lower_nord_v4
            return lower_nord_v4(handle.config, sd, getattr(handle, "_use_sdpa", None))
        return lower_nord(handle.config, sd)
    raise UserError(f"no lowering for model family {handle.family!r} yet")
