"""Exercises of chapter 03: the Transformer's pieces, each checked against the
library's version."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..config import ModelConfig
from ..kv_cache import kv_cache_bytes
from ..layers import RMSNorm, apply_rope, rope_tables
from ..model import explicit_attention
from .check import Case, Exercise, Mistake, register, seeded_randn

# ---------------------------------------------------------------- chapter 03


def rmsnorm_reference(
    x: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """layers.RMSNorm, with the given weight, as a function."""
    norm = RMSNorm(x.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def _rmsnorm_cases() -> list[Case]:
    return [
        Case(
            "a (2, 5, 8) batch", (seeded_randn(2, 5, 8), seeded_randn(8, seed=1), 1e-5)
        ),
        Case(
            "tiny values, where eps matters",
            (1e-4 * seeded_randn(3, 16), seeded_randn(16), 1e-2),
        ),
        Case("an all-zero row", (torch.zeros(1, 8), torch.ones(8), 1e-5)),
    ]


register(
    Exercise(
        "rmsnorm",
        "03",
        "RMSNorm: divide by the root mean square, then scale",
        "easy",
        "rmsnorm(x, weight, eps) -> Tensor",
        rmsnorm_reference,
        _rmsnorm_cases,
        [
            Mistake(
                "eps goes inside the square root: x / sqrt(mean(x²) + eps)",
                lambda x, w, eps: (
                    w * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)
                ),
            ),
            Mistake(
                "RMSNorm does not subtract the mean (that is LayerNorm)",
                lambda x, w, eps: w * F.layer_norm(x, x.shape[-1:], eps=eps),
            ),
            Mistake(
                "average over the last dimension (the features), keepdim=True",
                lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).mean(0) + eps),
            ),
            Mistake(
                "multiply by the learned weight at the end",
                lambda x, w, eps: (
                    x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
                ),
            ),
        ],
    )
)


def _rope_cases() -> list[Case]:
    cos, sin = rope_tables(8, 6)
    return [
        Case("one head, 6 positions, head_dim 8", (seeded_randn(1, 1, 6, 8), cos, sin)),
        Case("a batch of 2 with 3 heads", (seeded_randn(2, 3, 6, 8, seed=2), cos, sin)),
    ]


def _rope_interleaved(x, cos, sin):
    """Rotating neighbours (0, 1), (2, 3), ... instead of the two halves."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


register(
    Exercise(
        "apply_rope",
        "03",
        "RoPE: rotate each pair of dimensions by an angle that grows with position",
        "medium",
        "apply_rope(x, cos, sin) -> Tensor   # x: (..., seq, head_dim)",
        apply_rope,
        _rope_cases,
        [
            Mistake(
                "the rotated partner of the first half is minus the second half: "
                "cat(-x2, x1), not cat(x2, -x1)",
                lambda x, cos, sin: (
                    x * cos
                    + torch.cat(
                        (x[..., x.shape[-1] // 2 :], -x[..., : x.shape[-1] // 2]), -1
                    )
                    * sin
                ),
            ),
            Mistake(
                "the pairs are dimension i and i + head_dim/2 (the two halves), "
                "not neighbours 2i and 2i+1",
                _rope_interleaved,
            ),
        ],
    )
)


def swiglu_reference(x, w_gate, w_up, w_down):
    """The MLP of chapter 03: down(silu(gate(x)) * up(x)); weights as in nn.Linear."""
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def _swiglu_cases() -> list[Case]:
    return [
        Case(
            "d_model 8, hidden 16",
            (
                seeded_randn(2, 3, 8),
                seeded_randn(16, 8, seed=1),
                seeded_randn(16, 8, seed=2),
                seeded_randn(8, 16, seed=3),
            ),
        ),
    ]


register(
    Exercise(
        "swiglu",
        "03",
        "SwiGLU: a gated MLP, silu(gate) times up, then down",
        "easy",
        "swiglu(x, w_gate, w_up, w_down) -> Tensor   # weights shaped like nn.Linear's",
        swiglu_reference,
        _swiglu_cases,
        [
            Mistake(
                "the gate goes through silu, not the up projection",
                lambda x, g, u, d: ((x @ g.T) * F.silu(x @ u.T)) @ d.T,
            ),
            Mistake(
                "SwiGLU uses silu (x * sigmoid(x)), not gelu",
                lambda x, g, u, d: (F.gelu(x @ g.T) * (x @ u.T)) @ d.T,
            ),
        ],
        hint="nn.Linear stores its weight as (out, in): project with x @ W.T",
    )
)


def causal_attention_reference(q, k, v):
    return explicit_attention(q, k, v)[0]


def _attention_cases() -> list[Case]:
    return [
        Case(
            "4 heads, 4 key/value heads (plain multi-head)",
            (
                seeded_randn(1, 4, 5, 8),
                seeded_randn(1, 4, 5, 8, seed=1),
                seeded_randn(1, 4, 5, 8, seed=2),
            ),
        ),
        Case(
            "4 query heads sharing 2 key/value heads (GQA)",
            (
                seeded_randn(2, 4, 6, 8, seed=3),
                seeded_randn(2, 2, 6, 8, seed=4),
                seeded_randn(2, 2, 6, 8, seed=5),
            ),
        ),
    ]


def _attention(q, k, v, causal=True, scale=True, axis=-1, interleave=True):
    groups = q.shape[1] // k.shape[1]
    if interleave:
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    else:
        k, v = k.repeat(1, groups, 1, 1), v.repeat(1, groups, 1, 1)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    if causal:
        t = q.shape[2]
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=axis).nan_to_num() @ v


register(
    Exercise(
        "causal_attention",
        "03",
        "Causal attention with grouped key/value heads",
        "hard",
        "causal_attention(q, k, v) -> Tensor   # q: (b, heads, t, d); k, v: "
        "(b, kv_heads, t, d)",
        causal_attention_reference,
        _attention_cases,
        [
            Mistake(
                "mask the future: position i may only attend to positions <= i",
                lambda q, k, v: _attention(q, k, v, causal=False),
            ),
            Mistake(
                "divide the scores by sqrt(head_dim) before the softmax",
                lambda q, k, v: _attention(q, k, v, scale=False),
            ),
            Mistake(
                "the softmax runs over the keys (the last axis), one distribution "
                "per query",
                lambda q, k, v: _attention(q, k, v, axis=-2),
            ),
            Mistake(
                "query heads 0 and 1 share key/value head 0: repeat_interleave, "
                "not repeat",
                lambda q, k, v: _attention(q, k, v, interleave=False),
            ),
        ],
    )
)


def _kv_cases() -> list[Case]:
    gqa = ModelConfig(
        vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192
    )
    mha = ModelConfig(
        vocab_size=512, d_model=64, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=192
    )
    return [
        Case("2 layers, 4 query heads sharing 2 KV heads, bf16", (gqa, 1, 128, 2)),
        Case("3 layers of plain multi-head attention, batch 8, fp32", (mha, 8, 64, 4)),
    ]


register(
    Exercise(
        "kv_cache_bytes",
        "03",
        "The memory of a KV cache, and what grouped KV heads save",
        "easy",
        "kv_cache_bytes(config, batch_size, seq_len, bytes_per_value) -> int",
        kv_cache_bytes,
        _kv_cases,
        [
            Mistake(
                "only the key/value heads are cached: n_kv_heads, not n_heads",
                lambda c, b, t, n: 2 * c.n_layers * b * t * c.n_heads * c.head_dim * n,
            ),
            Mistake(
                "the cache holds keys and values: twice the size of either",
                lambda c, b, t, n: c.n_layers * b * t * c.n_kv_heads * c.head_dim * n,
            ),
        ],
    )
)
