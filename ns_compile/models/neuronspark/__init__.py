"""NeuronSpark-V1 frontend (NeuronSpark-0.9B / -0.9B-Chat): config, checkpoint loading and
validation, the exact reference model, tokenizer glue and `inspect` counts.

The source of truth is the reimplementation spec (shared/research/neuronspark.md); no upstream
code is used.
"""
from ns_compile.models.neuronspark.config import NSConfig  # noqa: F401
from ns_compile.models.neuronspark.handle import NeuronSparkHandle, load_dir, load_training_checkpoint  # noqa: F401
