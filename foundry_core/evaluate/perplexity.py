"""Perplexity on held-out text: how well a model predicts text it never saw.

A long text is scored in windows of the model's context. With a stride shorter than the
window, every token after the first window is predicted with at least
`seq_len - stride` tokens of context (`window_plan`), which is what a reader of the
whole text would have. `kl_to_reference` compares two models' next-token distributions
on the same windows, the finer measure chapter 11 uses for quantization.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..sequences import IGNORE


def window_plan(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """(start, skip) of each window: it reads tokens start .. start + seq_len - 1,
    predicts the next seq_len, and leaves its first `skip` predictions unscored because
    the window before it scored them already.

    Windows start every `stride` tokens and a last one ends at the final token, so every
    token but the first is scored exactly once; after the first window, each with at
    least seq_len - stride tokens of context.
    """
    if seq_len < 1 or not 1 <= stride <= seq_len:
        raise ValueError(
            "need seq_len >= 1 and 1 <= stride <= seq_len, "
            f"got seq_len={seq_len}, stride={stride}"
        )
    if n_tokens < seq_len + 1:
        raise ValueError(
            f"{n_tokens} tokens are fewer than one window of "
            f"seq_len + 1 = {seq_len + 1}: "
            f"use a shorter seq_len or more held-out text"
        )
    last = n_tokens - seq_len - 1
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    plan, scored_until = [], 0  # the last target position scored so far
    for start in starts:
        plan.append((start, max(0, scored_until - start)))
        scored_until = start + seq_len
    return plan


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokens: np.ndarray | torch.Tensor,
    seq_len: int,
    batch_size: int = 8,
    stride: int | None = None,
    max_windows: int | None = None,
) -> float:
    """exp(mean negative log-likelihood per token) of held-out tokens: the model is, on
    average, as unsure as a uniform choice among that many tokens (a model that knows
    nothing scores its vocabulary size).

    Windows of seq_len tokens tile the text (see window_plan). With stride == seq_len
    (the default) each window starts from scratch, so its first tokens are predicted
    with almost no context; a smaller stride overlaps the windows and scores only each
    window's last `stride` tokens: every token is still scored once, with more context,
    at seq_len / stride times the compute. `max_windows` keeps only the first ones.
    """
    _check_context(model, seq_len, f"seq_len {seq_len} is")
    total_nll, total_count = 0.0, 0
    with _evaluating(model):
        for inputs, targets in _window_batches(
            tokens, seq_len, stride, batch_size, max_windows
        ):
            loss = model(inputs.to(_device(model)), targets.to(_device(model)))[1]
            count = int((targets != IGNORE).sum())
            total_nll, total_count = (
                total_nll + float(loss) * count,
                total_count + count,
            )
    return math.exp(total_nll / total_count)


@torch.no_grad()
def kl_to_reference(
    reference: nn.Module,
    model: nn.Module,
    tokens: np.ndarray | torch.Tensor,
    seq_len: int,
    batch_size: int = 8,
    max_windows: int | None = None,
) -> float:
    """Mean KL(reference || model) in nats per token over held-out windows: how far
    `model`'s next-token distributions moved from `reference`'s. Zero only for identical
    predictions. Unlike a perplexity difference, which can fall either way by chance, it
    grows with every change to the weights, so it ranks two approximations of one model
    (int8 vs int4) reliably even when their perplexities tie.
    """
    _check_context(model, seq_len, f"seq_len {seq_len} is")
    total, count = 0.0, 0
    with _evaluating(reference), _evaluating(model):
        for inputs, _ in _window_batches(
            tokens, seq_len, None, batch_size, max_windows
        ):
            ref_logp = F.log_softmax(
                reference(inputs.to(_device(reference)))[0].float(), dim=-1
            )
            logp = F.log_softmax(
                model(inputs.to(_device(model)))[0].float(), dim=-1
            ).to(ref_logp.device)
            total += float((ref_logp.exp() * (ref_logp - logp)).sum())
            count += ref_logp.shape[0] * ref_logp.shape[1]
    return total / count


def _window_batches(
    tokens: np.ndarray | torch.Tensor,
    seq_len: int,
    stride: int | None,
    batch_size: int,
    max_windows: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) batches of the windows that tile `tokens` (window_plan);
    targets the window shares with the one before are IGNORE, so every token is scored
    once. `max_windows` keeps the first."""
    if max_windows is not None and max_windows < 1:
        raise ValueError(
            f"max_windows must be a positive integer or None, got {max_windows}"
        )
    tokens = _token_array(tokens)
    plan = window_plan(len(tokens), seq_len, seq_len if stride is None else stride)[
        :max_windows
    ]
    for first in range(0, len(plan), batch_size):
        yield _window_batch(tokens, plan[first : first + batch_size], seq_len)


def _window_batch(
    tokens: np.ndarray, windows: Sequence[tuple[int, int]], seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.from_numpy(
        np.stack([tokens[s : s + seq_len + 1] for s, _ in windows]).astype(np.int64)
    )
    inputs, targets = rows[:, :-1].contiguous(), rows[:, 1:].clone()
    for row, (_, skip) in enumerate(windows):
        targets[row, :skip] = IGNORE
    return inputs, targets


def _token_array(tokens: np.ndarray | torch.Tensor) -> np.ndarray:
    tokens = (
        tokens.cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    )
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            "tokens must be a flat array of token ids, "
            f"got shape {tokens.shape} of {tokens.dtype}"
        )
    return tokens


def _check_context(model: nn.Module, length: int, what: str) -> None:
    context = getattr(getattr(model, "config", None), "max_seq_len", None)
    if context is not None and length > context:
        raise ValueError(
            f"{what} larger than the model's context (max_seq_len={context}): "
            f"stay within {context} tokens"
        )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) for the duration, then back to whatever mode the
    caller had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
