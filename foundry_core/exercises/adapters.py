"""Exercise of chapter 06: merging LoRA adapters into the frozen weight, checked against
LoRALinear.merge."""

from __future__ import annotations

import torch
from torch import nn

from ..lora import LoRALinear
from .check import Case, Exercise, Mistake, register, seeded_randn


def merged_weight(weight, lora_A, lora_B, alpha):
    """What LoRALinear.merge writes into the layer's weight."""
    rank = lora_A.shape[0]
    base = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer = LoRALinear(base, rank, alpha)
    with torch.no_grad():
        base.weight.copy_(weight)
        layer.lora_A.copy_(lora_A)
        layer.lora_B.copy_(lora_B)
    layer.merge()
    return layer.base.weight.detach().clone()


def _case(what: str, out: int, width: int, rank: int, alpha: float, seed: int) -> Case:
    return Case(
        what,
        (
            seeded_randn(out, width, seed=seed),
            seeded_randn(rank, width, seed=seed + 1),
            seeded_randn(out, rank, seed=seed + 2),
            alpha,
        ),
    )


register(
    Exercise(
        "lora_merge",
        "06",
        "LoRA: fold the adapters' update (alpha / r) B A into the frozen weight",
        "easy",
        "lora_merge(weight, lora_A, lora_B, alpha) -> merged weight   # weight: out x "
        "in, lora_A: r x in, lora_B: out x r",
        merged_weight,
        lambda: [
            _case("rank 2, alpha 4, a 6 x 4 weight", 6, 4, 2, 4.0, 0),
            _case("rank 1, alpha 1", 5, 3, 1, 1.0, 10),
            _case("rank 3, alpha 16, a 4 x 8 weight", 4, 8, 3, 16.0, 20),
        ],
        [
            Mistake(
                "the update is scaled by alpha / r, the rank being lora_A.shape[0]",
                lambda w, a, b, alpha: w + alpha * b @ a,
            ),
            Mistake(
                "scale the update by alpha / r: without it, the merged model is not "
                "the one that was trained",
                lambda w, a, b, alpha: w + b @ a,
            ),
            Mistake(
                "the scale is alpha / r, not r / alpha",
                lambda w, a, b, alpha: w + a.shape[0] / alpha * b @ a,
            ),
        ],
    )
)
