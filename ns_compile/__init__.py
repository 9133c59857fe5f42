"""ns-compile: spiking language models from GPU checkpoints to Loihi 2."""

__version__ = "0.1.0"
