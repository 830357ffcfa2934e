"""Model and training configurations, validated where they are made.

Every setting in the course flows from a few small dataclasses. They check themselves on
construction, so a bad value fails here, with a message that says what to change,
rather than as a shape error deep inside PyTorch twenty minutes into a run. A preset
(recipe.py) bundles one of each with the other sections of a recipe (settings.py).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

DTYPES = ("auto", "float32", "bfloat16", "float16")

_C = TypeVar("_C", bound="_Validated")


class _Validated:
    """Shared plumbing: dict round-trips that reject unknown keys with a suggestion."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], values: dict[str, Any]) -> _C:
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = (
                    f"; did you mean '{close[0]}'?"
                    if close
                    else f"; valid fields: {', '.join(known)}"
                )
                raise ValueError(f"unknown field '{key}' for {cls.__name__}{hint}")
        return cls(**values)


def require_positive_ints(owner: str = "", **values: int) -> None:
    """Raise a one-line ValueError naming the first value that is not a positive int
    (bools excluded)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            where = f"{owner}.{name}" if owner else name
            raise ValueError(f"{where} must be a positive integer, got {value!r}")


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _nearest_multiples(value: int, step: int) -> str:
    lower = max(step, value - value % step)
    upper = lower + step if lower <= value else lower
    return f"{lower} or {upper}" if lower != upper else str(lower)


def swiglu_hidden(d_model: int, multiple_of: int = 8) -> int:
    """The SwiGLU width that keeps the MLP's parameter count close to a 4*d GELU MLP.

    SwiGLU has three matrices instead of two, so LLaMA scales the hidden size by 2/3:
    8/3 * d_model, rounded up to a multiple that suits matrix kernels.
    """
    hidden = int(8 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class ModelConfig(_Validated):
    """A decoder-only Transformer's shape (LLaMA-style: RoPE, GQA, SwiGLU, RMSNorm)."""

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    # 1 = multi-query attention, n_heads = classic multi-head attention
    n_kv_heads: int = 4
    # SwiGLU hidden width; a multiple of 128 so int4 groups of 32-128 divide it
    d_ff: int = 768
    max_seq_len: int = 256
    rope_base: float = 10000.0
    dropout: float = 0.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        require_positive_ints(
            "ModelConfig",
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            d_ff=self.d_ff,
            max_seq_len=self.max_seq_len,
        )
        if self.d_model % self.n_heads:
            heads = [
                k
                for k in _divisors(self.d_model)
                if k <= 4 * self.n_heads and self.d_model // k >= 8
            ]
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by "
                f"n_heads ({self.n_heads}): "
                f"use d_model={_nearest_multiples(self.d_model, self.n_heads)}, "
                f"or n_heads in {heads[-6:]}"
            )
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of "
                f"n_kv_heads ({self.n_kv_heads}): "
                f"choose n_kv_heads from {_divisors(self.n_heads)} "
                f"(1 = MQA, {self.n_heads} = MHA)"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head size d_model/n_heads = {self.head_dim} is odd, "
                "but RoPE rotates pairs of dimensions: "
                "pick d_model and n_heads so that d_model/n_heads is even"
            )
        if self.vocab_size > 2**32:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) "
                "must fit in uint32 token files (<= 2**32)"
            )
        if not self.rope_base > 1:
            raise ValueError(
                "rope_base must be > 1 (10000 is the usual value), "
                f"got {self.rope_base}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.norm_eps < 1.0:
            raise ValueError(
                "norm_eps must be a small positive number (e.g. 1e-5), "
                f"got {self.norm_eps}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection: under GQA/MQA, less than d_model."""
        return self.n_kv_heads * self.head_dim

    def param_counts(self) -> dict[str, int]:
        """Parameters by component, counted from the shapes (no model is built)."""
        d, kv = self.d_model, self.kv_dim
        # q and o are d x d; k and v are d x kv
        per_layer_attention = 2 * d * d + 2 * d * kv
        per_layer_mlp = 3 * d * self.d_ff  # gate, up and down projections
        per_layer_norms = 2 * d  # RMSNorm gains before attention and before the MLP
        return {
            "embedding": self.vocab_size * d,
            "attention": self.n_layers * per_layer_attention,
            "mlp": self.n_layers * per_layer_mlp,
            "norms": self.n_layers * per_layer_norms + d,  # + the final norm
            "lm_head": 0 if self.tie_embeddings else self.vocab_size * d,
        }

    def num_params(self, non_embedding: bool = False) -> int:
        counts = self.param_counts()
        if non_embedding:
            counts.pop("embedding")
        return sum(counts.values())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6 per matmul weight, plus the attention scores
        (PaLM's formula).

        Forward is 2 FLOPs per weight per token and backward twice that. The embedding
        lookup is free, but the output projection is a real matmul whether or not it
        shares the embedding's weights. Attention adds 12 * n_layers * d_model * seq_len
        (Chowdhery et al., 2022, appendix B).
        """
        seq_len = self.max_seq_len if seq_len is None else seq_len
        counts = self.param_counts()
        matmul_weights = (
            counts["attention"] + counts["mlp"] + self.vocab_size * self.d_model
        )
        return 6 * matmul_weights + 12 * self.n_layers * self.d_model * seq_len


@dataclass(frozen=True)
class TrainConfig(_Validated):
    """How to train: batch shape, optimizer, schedule, precision and run length."""

    batch_size: int = 16  # sequences per micro-batch
    seq_len: int = 256
    grad_accum_steps: int = 1  # micro-batches summed before each optimizer step
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4  # the floor of the cosine decay
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    dtype: str = "auto"  # "auto" picks per device (see hardware.choose_precision)
    compile: bool = False
    grad_checkpointing: bool = False
    eval_interval: int = 100
    eval_steps: int = 20
    seed: int = 1337

    def __post_init__(self) -> None:
        require_positive_ints(
            "TrainConfig",
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            grad_accum_steps=self.grad_accum_steps,
            max_steps=self.max_steps,
            eval_interval=self.eval_interval,
            eval_steps=self.eval_steps,
        )
        if not self.lr > 0:
            raise ValueError(
                f"lr must be positive (e.g. 1e-3 for a small model), got {self.lr}"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(
                f"min_lr ({self.min_lr}) must lie between 0 and lr ({self.lr})"
            )
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be >= 0 and smaller than "
                f"max_steps ({self.max_steps}); a few percent of max_steps is typical"
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ValueError(
                f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype '{self.dtype}' is not one of {', '.join(DTYPES)}")
        require_seed("TrainConfig", self.seed)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum_steps

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.max_steps


def check_compatible(model: ModelConfig, train: TrainConfig) -> None:
    """Raise if a training config asks for more than the model supports."""
    if train.seq_len > model.max_seq_len:
        raise ValueError(
            f"TrainConfig.seq_len ({train.seq_len}) exceeds ModelConfig.max_seq_len "
            f"({model.max_seq_len}): lower seq_len or raise max_seq_len"
        )


def require_seed(owner: str, seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{owner}.seed must be a non-negative integer, got {seed!r}")
