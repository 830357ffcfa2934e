"""Scaling laws, measured on the reader's machine: how the lowest loss a compute budget
can buy falls as the budget grows, and which model size buys it.

Kaplan et al. (2020) found that loss falls as a power of training compute, and
Hoffmann et al. (2022) that each budget has a best model size: a smaller model runs out
of capacity, a larger one out of steps. Their recipe (IsoFLOP profiles): train several
sizes on the same compute, find the size with the lowest loss, repeat at a few budgets,
and fit straight lines on log-log axes. The lines then predict a larger run before it
is made; `held_out` checks the prediction by making it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .model import Transformer
from .train import Trainer


def model_at_width(base: ModelConfig, width: int) -> ModelConfig:
    """`base` at another width (d_model): 16-dimensional heads, half as many key/value
    heads and a feed-forward layer 3 x wider, so every size has the same shape."""
    heads = max(1, width // 16)
    return replace(
        base,
        d_model=width,
        n_heads=heads,
        n_kv_heads=max(1, heads // 2),
        d_ff=3 * width,
    )


@dataclass(frozen=True)
class ScalingRun:
    """One model trained on one compute budget, and the loss it reached."""

    width: int
    params: int
    compute: float  # training FLOPs (the model's flops_per_token x tokens read)
    steps: int
    val_loss: float


def train_at_compute(
    model: ModelConfig,
    train: TrainConfig,
    compute: float,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
) -> ScalingRun:
    """Train `model` for as many steps as `compute` pays for, with a learning-rate
    schedule as long as the run (a schedule cut short would handicap the short runs),
    and measure the validation loss at the end."""
    per_step = model.flops_per_token(train.seq_len) * train.tokens_per_step
    steps = max(1, round(compute / per_step))
    config = replace(
        train,
        max_steps=steps,
        warmup_steps=max(1, steps // 10),
        eval_interval=steps,
    )
    torch.manual_seed(config.seed)
    trainer = Trainer(Transformer(model), config, train_tokens, val_tokens)
    history = trainer.fit()
    return ScalingRun(
        model.d_model,
        model.num_params(),
        steps * per_step,
        steps,
        history[-1]["val_loss"],
    )


def isoflop_sweep(
    base: ModelConfig,
    train: TrainConfig,
    budgets: Sequence[float],
    widths: Sequence[int],
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
) -> dict[float, list[ScalingRun]]:
    """Every width trained on every compute budget: one IsoFLOP profile per budget."""
    return {
        budget: [
            train_at_compute(
                model_at_width(base, w), train, budget, train_tokens, val_tokens
            )
            for w in widths
        ]
        for budget in budgets
    }


def isoflop_optimum(runs: Sequence[ScalingRun]) -> tuple[float, float]:
    """(parameters, loss) at the bottom of one budget's IsoFLOP profile: a parabola in
    log(parameters) through its runs, or the best run when the parabola has no bottom
    inside the sizes tried."""
    x = np.log([r.params for r in runs])
    y = np.array([r.val_loss for r in runs])
    best = int(np.argmin(y))
    a, b, c = np.polyfit(x, y, 2)
    vertex = -b / (2 * a) if a > 0 else None
    if vertex is None or not x.min() < vertex < x.max():
        return float(runs[best].params), float(y[best])
    return float(math.exp(vertex)), float(c - b * b / (4 * a))


@dataclass(frozen=True)
class PowerLaw:
    """y = exp(intercept) * x ** exponent: a straight line on log-log axes, fitted by
    least squares, with the spread of its points around it."""

    exponent: float
    intercept: float
    residual_sd: float  # of log y around the line
    log_x: tuple[float, ...]  # the points it was fitted to

    def __call__(self, x: float) -> float:
        return math.exp(self.intercept + self.exponent * math.log(x))

    def interval(self, x: float, level: float = 0.95) -> tuple[float, float]:
        """Where a new point at `x` should land: the least-squares prediction
        interval, Student's t with n - 2 degrees of freedom."""
        n = len(self.log_x)
        mean = sum(self.log_x) / n
        sxx = sum((v - mean) ** 2 for v in self.log_x)
        spread = self.residual_sd * math.sqrt(
            1 + 1 / n + (math.log(x) - mean) ** 2 / sxx
        )
        half = t_quantile(0.5 + level / 2, n - 2) * spread
        centre = self.intercept + self.exponent * math.log(x)
        return math.exp(centre - half), math.exp(centre + half)


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """The least-squares line through (log x, log y); needs three points or more (two
    fit any line exactly and leave nothing to judge it by)."""
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"a power law needs 3 or more (x, y) points, got {len(x)}")
    log_x, log_y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    exponent, intercept = np.polyfit(log_x, log_y, 1)
    residuals = log_y - (intercept + exponent * log_x)
    sd = math.sqrt(float(residuals @ residuals) / (len(x) - 2))
    return PowerLaw(float(exponent), float(intercept), sd, tuple(map(float, log_x)))


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (no SciPy): its density integrated numerically and the
    cumulative distribution inverted by interpolation; accurate to about 1e-4."""
    if dof < 1 or not 0.5 <= p < 1:
        raise ValueError(f"need dof >= 1 and 0.5 <= p < 1, got dof={dof}, p={p}")
    t = np.linspace(0.0, 200.0, 400_001)
    log_norm = (
        math.lgamma((dof + 1) / 2)
        - math.lgamma(dof / 2)
        - 0.5 * math.log(dof * math.pi)
    )
    density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(t * t / dof))
    steps = (density[1:] + density[:-1]) / 2 * (t[1] - t[0])
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum(steps)])
    return float(np.interp(p, cdf, t))
