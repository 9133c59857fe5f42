"""The integer emulator (golden model) and the float IR interpreter (see docs/architecture.md).

Public API (also used by the Lava backend):
- `Emulator(graph, device="cpu")`: `.new_state(batch)`, `.run_stage(stage, drive, state, trace=False)`,
  `.step(ids, state, trace=False)`, `.forward(ids)`, `.generate(...)`, `.counters`, `.activity()`;
- `run_host_op(op, inputs, config)`: every host op (docs/fixed_point.md §5);
- `ns_compile.sim.intops`: the integer primitives.
"""
from ns_compile.sim.emulator import EmuState, Emulator  # noqa: F401
from ns_compile.sim.host import run_host_op  # noqa: F401
