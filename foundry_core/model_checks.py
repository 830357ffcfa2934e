"""Readable errors for what a Transformer is given: token ids, masks and weights.

A wrong input would otherwise fail deep inside torch, with an index or shape error that
names neither the culprit nor the fix. These checks run first and say both. They live
apart so that model.py shows the computation, not its guard rails.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


def check_token_ids(idx: torch.Tensor, config: ModelConfig, past: int) -> None:
    """Refuse ids the model cannot take, saying what to do instead.

    They must be an integer tensor of shape (batch, seq), fit in the context after the
    `past` cached positions, and lie inside the vocabulary. The vocabulary check reads
    the ids' range back to Python, so torch.compile skips it: a compiled graph would
    otherwise break in two there on every call (seen in benchmarks/bench_model.py).
    """
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (
        torch.long,
        torch.int32,
        torch.int64,
    ):
        kind = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise TypeError(f"token ids must be an integer tensor (torch.long), got {kind}")
    if idx.dim() != 2:
        raise ValueError(
            f"token ids must have shape (batch, seq), got {tuple(idx.shape)}; "
            f"for one sequence use ids[None]"
        )
    if past + idx.shape[1] > config.max_seq_len:
        raise ValueError(
            f"{past + idx.shape[1]} positions exceed the model's context "
            f"(max_seq_len={config.max_seq_len}): shorten the input"
        )
    if idx.numel() and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(idx))
        if low < 0 or high >= config.vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {config.vocab_size}), "
                f"got [{low}, {high}]: "
                f"tokenizer and model vocabularies differ?"
            )


def check_attention_mask(mask: torch.Tensor, shape: tuple[int, int]) -> None:
    """Refuse a mask that does not cover each row's cached and new positions."""
    if mask.shape != shape:
        raise ValueError(
            f"attention_mask must have shape (batch, past + seq) = "
            f"{shape}, got {tuple(mask.shape)}"
        )


def check_weights_fit(
    own: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    config: ModelConfig,
    source: str,
) -> None:
    """Compare a state dict with the model's own and list every mismatch in one error.

    A missing, unexpected or misshapen tensor all mean the same thing: the weights come
    from a model of another shape, so the error also shows this model's shape.
    """
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, the model expects {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (
            f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        )
        raise ValueError(
            f"{source} does not fit this model (d_model={config.d_model}, "
            f"n_layers={config.n_layers}, vocab_size={config.vocab_size}): {shown}"
        )
