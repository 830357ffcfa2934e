"""foundry_core: the library behind LLM Foundry, a course that trains a small LLM
end to end."""

import os as _os
import sys as _sys

# On Apple silicon, let an operation that Metal lacks run on the CPU instead of failing.
# PyTorch reads this variable once, when torch is imported, so it is set here, before
# our first `import torch`.
if _sys.platform == "darwin" and "torch" not in _sys.modules:
    _os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
_MPS_FALLBACK_AT_TORCH_IMPORT = _os.environ.get(
    "PYTORCH_ENABLE_MPS_FALLBACK", "0"
).strip() not in ("", "0")

from .allocator import keep_freed_memory as _keep_freed_memory
from .config import ModelConfig, TrainConfig, check_compatible, swiglu_hidden
from .generate import generate, stream
from .hardware import (
    HardwareInfo,
    Precision,
    choose_precision,
    detect,
    measure_matmul_tflops,
)
from .hardware import apply_thread_setting as _apply_thread_setting
from .memory import (
    MeasuredMemory,
    MemoryEstimate,
    estimate_memory,
    measure_checkpointing,
    measure_training_memory,
)
from .model import KVCache, Transformer
from .presets import (
    EXAMPLE_MACHINES,
    PRESETS,
    Preset,
    PresetChoice,
    course_seed,
    fast_mode,
    from_environment,
    get_preset,
    pick_preset,
    select_preset,
    with_overrides,
)
from .tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe, train_tokenizer
from .train import Trainer, TrainingDiverged
from .watchdog import watchdog_from_environment as _watchdog_from_environment

# FOUNDRY_THREADS=<n>: the CPU threads PyTorch uses (default: PyTorch's choice)
_apply_thread_setting()
# FOUNDRY_KEEP_FREED_MEMORY=0: let malloc return freed memory at once (allocator.py)
_keep_freed_memory()
# FOUNDRY_IDLE_LIMIT=<s>: in a build, a kernel left waiting exits (watchdog.py)
_watchdog_from_environment()

__version__ = "0.1.0"

__all__ = [
    "KVCache",
    "Trainer",
    "TrainingDiverged",
    "Transformer",
    "generate",
    "stream",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "train_bpe",
    "train_tokenizer",
    "EXAMPLE_MACHINES",
    "PRESETS",
    "HardwareInfo",
    "MeasuredMemory",
    "MemoryEstimate",
    "ModelConfig",
    "Precision",
    "Preset",
    "PresetChoice",
    "TrainConfig",
    "check_compatible",
    "choose_precision",
    "detect",
    "estimate_memory",
    "course_seed",
    "fast_mode",
    "from_environment",
    "get_preset",
    "measure_checkpointing",
    "measure_matmul_tflops",
    "measure_training_memory",
    "pick_preset",
    "select_preset",
    "swiglu_hidden",
    "with_overrides",
]
