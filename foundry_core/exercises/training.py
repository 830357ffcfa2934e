"""Exercises of chapter 04: the schedule, gradient clipping and one AdamW step, checked
against the library's schedule and PyTorch's own clipping and optimizer."""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig
from ..optim import lr_at
from .check import Case, Exercise, Mistake, register

# ---------------------------------------------------------------- chapter 04


SCHEDULE = TrainConfig(
    batch_size=1, seq_len=8, max_steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4
)


def _lr_cases() -> list[Case]:
    return [
        Case(
            f"step {step} of {SCHEDULE.max_steps} (warmup {SCHEDULE.warmup_steps})",
            (step, SCHEDULE),
        )
        for step in (0, 4, 9, 10, 55, 99, 100, 150)
    ]


register(
    Exercise(
        "lr_schedule",
        "04",
        "Linear warmup, then a cosine decay to min_lr",
        "easy",
        "lr_at(step, config) -> float   # config.lr, min_lr, warmup_steps, max_steps",
        lr_at,
        _lr_cases,
        [
            Mistake(
                "the first step (step 0) already takes a small step: "
                "lr * (step + 1) / warmup_steps",
                lambda s, c: (
                    c.lr * s / c.warmup_steps if s < c.warmup_steps else lr_at(s, c)
                ),
            ),
            Mistake(
                "the cosine ends at min_lr, not at 0",
                lambda s, c: (
                    lr_at(s, c)
                    if s < c.warmup_steps
                    else 0.5
                    * c.lr
                    * (
                        1
                        + math.cos(
                            math.pi
                            * min(
                                1.0,
                                (s - c.warmup_steps) / (c.max_steps - c.warmup_steps),
                            )
                        )
                    )
                ),
            ),
            Mistake(
                "after max_steps the rate stays at min_lr: clamp the progress at 1",
                lambda s, c: (
                    lr_at(min(s, c.max_steps), c)
                    if s <= c.max_steps
                    else c.min_lr
                    + 0.5
                    * (c.lr - c.min_lr)
                    * (
                        1
                        + math.cos(
                            math.pi
                            * (s - c.warmup_steps)
                            / (c.max_steps - c.warmup_steps)
                        )
                    )
                ),
            ),
        ],
        atol=1e-9,
    )
)


def clip_reference(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """torch.nn.utils.clip_grad_norm_ on copies: one norm over all the gradients."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params]


def _clip_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    big = [10 * torch.randn(4, 3, generator=g), 10 * torch.randn(5, generator=g)]
    small = [0.01 * torch.randn(4, 3, generator=g), 0.01 * torch.randn(5, generator=g)]
    return [
        Case("two large gradients (total norm above max_norm = 1)", (big, 1.0)),
        Case("small gradients (below max_norm: leave them alone)", (small, 1.0)),
    ]


def _clip_each(grads, max_norm):
    return [g * min(1.0, max_norm / (g.norm() + 1e-6)) for g in grads]


def _clip_always(grads, max_norm):
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    return [g * max_norm / (total + 1e-6) for g in grads]


register(
    Exercise(
        "clip_grad_norm",
        "04",
        "Gradient clipping: scale all gradients by one factor when their total norm "
        "exceeds max_norm",
        "medium",
        "clip_grad_norm(grads: list[Tensor], max_norm) -> list[Tensor]",
        clip_reference,
        _clip_cases,
        [
            Mistake(
                "use one norm over all the gradients together (the norm of their "
                "concatenation), not one per tensor",
                _clip_each,
            ),
            Mistake(
                "only scale down: gradients whose total norm is below max_norm stay "
                "as they are",
                _clip_always,
            ),
        ],
        atol=1e-5,
    )
)


ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def adamw_reference(param, grad, m, v, step):
    """torch.optim.AdamW's update of one tensor at `step` (1 = the first), starting
    from moments m and v: returns (param, m, v) after the step."""
    p = torch.nn.Parameter(param.clone())
    optimizer = torch.optim.AdamW([p], **ADAMW)
    optimizer.state[p] = {
        "step": torch.tensor(float(step - 1)),
        "exp_avg": m.clone(),
        "exp_avg_sq": v.clone(),
    }
    p.grad = grad.clone()
    optimizer.step()
    state = optimizer.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


def _adamw_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    param, grad = torch.randn(6, generator=g), torch.randn(6, generator=g)
    m, v = 0.1 * torch.randn(6, generator=g), 0.01 * torch.rand(6, generator=g)
    zeros = torch.zeros(6)
    return [
        Case("the first step (moments at zero)", (param, grad, zeros, zeros, 1)),
        Case("step 10, with moments from earlier steps", (param, grad, m, v, 10)),
    ]


def _adamw(param, grad, m, v, step, correct=True, decoupled=True):
    lr, (b1, b2), eps, wd = (
        ADAMW["lr"],
        ADAMW["betas"],
        ADAMW["eps"],
        ADAMW["weight_decay"],
    )
    if not decoupled:
        grad = grad + wd * param
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    m_hat = m / (1 - b1**step) if correct else m
    v_hat = v / (1 - b2**step) if correct else v
    if decoupled:
        param = param * (1 - lr * wd)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


register(
    Exercise(
        "adamw_step",
        "04",
        "One AdamW step: moments, bias correction, decoupled weight decay",
        "hard",
        "adamw_step(param, grad, m, v, step) -> (param, m, v)   # hyper-parameters: "
        "exercises.ADAMW",
        adamw_reference,
        _adamw_cases,
        [
            Mistake(
                "correct the moments' bias towards zero: m / (1 - beta1**step) and "
                "v / (1 - beta2**step)",
                lambda p, g, m, v, s: _adamw(p, g, m, v, s, correct=False),
            ),
            Mistake(
                "AdamW decays the weights directly (param * (1 - lr * wd)); adding "
                "wd * param to the gradient is Adam with L2, a different optimizer",
                lambda p, g, m, v, s: _adamw(p, g, m, v, s, decoupled=False),
            ),
        ],
        atol=1e-6,
    )
)
