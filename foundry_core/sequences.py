"""Token sequences as training and evaluation both use them: padded batches, ignored
targets, and the log-probability a model gives to part of a sequence (an answer after
its prompt)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# A target with this id counts for nothing in the loss: prompt tokens, padding.
IGNORE = -100


def pad_right(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Rows of different lengths as one (batch, longest) tensor, filled with `value` on
    the right."""
    longest = max(len(r) for r in rows)
    return torch.tensor(
        [list(r) + [value] * (longest - len(r)) for r in rows], dtype=torch.long
    )


def token_logprobs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log p(token t | tokens before it) for every token after the first, (batch,
    seq - 1): entry t scores ids[:, t + 1]."""
    logits = model(ids[:, :-1])[0].float()
    return torch.gather(logits.log_softmax(-1), 2, ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(
    model: nn.Module, ids: torch.Tensor, answer: torch.Tensor
) -> torch.Tensor:
    """Sum of log p(token | everything before it) over the answer tokens of each
    sequence, (batch,)."""
    return (token_logprobs(model, ids) * answer[:, 1:]).sum(-1)
