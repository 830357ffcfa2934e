"""The optimizer and its learning-rate schedule: AdamW, warmup, then cosine decay.

Both are plain functions of the TrainConfig, apart from the Trainer, so a chapter can
show them on their own and plot the schedule without building a model.
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup from 0 to lr, then a cosine decay to min_lr at max_steps.

    Warmup keeps the first updates small while AdamW's moment estimates are still noise;
    the cosine lowers the step size smoothly as the model approaches a minimum.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(
        1.0,
        (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps),
    )
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (
        1 + math.cos(math.pi * progress)
    )


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices of the blocks only.

    Decay pulls weights towards zero. That regularises the large matrices, but on norm
    gains it fights the normalisation, and on the embedding it shrinks rare tokens'
    vectors just for being rare.
    """
    decay, no_decay = [], []
    embedding = {
        id(p) for name, p in model.named_parameters() if "embed_tokens" in name
    }
    for param in model.parameters():
        if param.requires_grad:
            matrix = param.dim() >= 2 and id(param) not in embedding
            (decay if matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=fused_adamw(decay + no_decay),
    )


def fused_adamw(params: list[torch.Tensor]) -> bool:
    """Can AdamW update these weights in one fused kernel? On a CPU or a CUDA GPU.

    Unfused, the update is a dozen passes over all the weights and moments; fused, one:
    on a 2-core Xeon the update took a third of the time (benchmarks/README.md), and it
    is what transformers' Trainer uses by default. Left out: MPS (not measured) and
    FSDP's sharded weights (not plain tensors).
    """
    return bool(params) and all(
        p.device.type in ("cpu", "cuda") and type(p.data) is torch.Tensor
        for p in params
    )
