"""foundry_core: the library behind LLM Foundry, a course that trains a small LLM end to end."""

from .config import ModelConfig, TrainConfig, check_compatible, swiglu_hidden
from .hardware import (
    HardwareInfo,
    MemoryEstimate,
    Precision,
    choose_precision,
    detect,
    estimate_memory,
    measure_matmul_tflops,
)
from .generate import generate, stream
from .model import KVCache, Transformer
from .train import Trainer, TrainingDiverged
from .tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe, train_tokenizer
from .presets import (
    EXAMPLE_MACHINES,
    PRESETS,
    Preset,
    PresetChoice,
    fast_mode,
    get_preset,
    pick_preset,
    select_preset,
    with_overrides,
)

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
    "fast_mode",
    "get_preset",
    "measure_matmul_tflops",
    "pick_preset",
    "select_preset",
    "swiglu_hidden",
    "with_overrides",
]
