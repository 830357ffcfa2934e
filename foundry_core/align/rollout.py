"""Rollouts: the policy answers a batch of prompts by sampling, several times each, and
every answer becomes a row of token ids that the RL losses score token by token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..generate import generate
from ..model import Transformer
from ..sequences import pad_right
from ..tokenizer import Tokenizer
from .chat import CHATML, ChatTemplate, encode_prompt, get_template


@dataclass(frozen=True)
class Rollouts:
    """Sampled answers, one row each: prompt + answer ids, right-padded with 0."""

    ids: torch.Tensor  # (n, length)
    answer: torch.Tensor  # (n, length) bool: True on the answer's tokens
    groups: torch.Tensor  # (n,) the index of the prompt each row answers
    texts: list[str]  # the answers as text, without the end-of-turn token
    finished: torch.Tensor  # (n,) bool: ended with end-of-turn, not cut off

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def answer_lengths(self) -> torch.Tensor:
        """Tokens in each answer, end-of-turn included."""
        return self.answer.sum(-1)


@torch.no_grad()
def rollout(
    policy: Transformer,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    template: str | ChatTemplate = CHATML,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """`samples` answers to each prompt, sampled with the KV cache in batches.

    An answer that ends with the end-of-turn token keeps it: stopping is part of what
    the policy learns. One cut off at max_new_tokens has none.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1 per prompt, got {samples}")
    if not prompts:
        raise ValueError("no prompts to answer")
    template = get_template(template)
    stop = template.end_of_turn(tokenizer)
    asked = [encode_prompt(tokenizer, p, template) for p in prompts]
    # each prompt's samples side by side: rows i * samples ... (i + 1) * samples - 1
    order = [i for i in range(len(prompts)) for _ in range(samples)]
    rows, answers, texts, finished = [], [], [], []
    for start in range(0, len(order), batch_size):
        chunk = [asked[i] for i in order[start : start + batch_size]]
        new = generate(
            policy,
            chunk,
            max_new_tokens,
            temperature=temperature,
            stop_tokens=[stop],
            generator=generator,
        )
        for prompt, tokens in zip(chunk, new):
            done = len(tokens) < max_new_tokens
            answer = tokens + [stop] * done
            rows.append(prompt + answer)
            answers.append([0] * len(prompt) + [1] * len(answer))
            texts.append(tokenizer.decode(tokens))
            finished.append(done)
    return Rollouts(
        pad_right(rows, 0),
        pad_right(answers, 0).bool(),
        torch.tensor(order),
        texts,
        torch.tensor(finished),
    )
