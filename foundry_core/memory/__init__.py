"""Training memory, estimated and measured: `estimate` counts the bytes from the shapes
alone (what a preset needs, before anything is built); `measure` runs real training
steps and holds the estimate to account."""

from .estimate import (
    ZERO_STAGES,
    MemoryEstimate,
    activation_bytes_per_token,
    estimate_memory,
    layer_bytes_per_token,
    loss_workspace_bytes,
    sharded_memory,
)
from .measure import (
    METHODS,
    MeasuredMemory,
    measure_checkpointing,
    measure_training_memory,
)

__all__ = [
    "METHODS",
    "ZERO_STAGES",
    "MeasuredMemory",
    "MemoryEstimate",
    "activation_bytes_per_token",
    "estimate_memory",
    "layer_bytes_per_token",
    "loss_workspace_bytes",
    "measure_checkpointing",
    "measure_training_memory",
    "sharded_memory",
]
