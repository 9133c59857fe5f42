"""The one IR between frontends and backends (see docs/architecture.md)."""
from ns_compile.ir.graph import Direct, Graph, HostOp, Population, Stage, Synapse  # noqa: F401
from ns_compile.ir.neurons import NEURON_TYPES, NeuronType  # noqa: F401
