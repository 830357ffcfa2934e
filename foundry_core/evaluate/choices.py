"""Multiple-choice accuracy: which option does the model find most likely?

Scoring each option by its log-probability avoids parsing free text, so a model too
small to answer well-formed questions still gets a fair, low-noise score.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..align.chat import CHATML, ChatTemplate, encode_chat
from ..align.tasks import Example
from ..sequences import pad_right, sequence_logprobs
from ..tokenizer import Tokenizer
from .perplexity import _check_context, _device, _evaluating


@dataclass(frozen=True)
class ChoiceItem:
    """A question, its options, and the index of the right one."""

    prompt: str
    options: tuple[str, ...]
    answer: int
    task: str = ""

    def __post_init__(self) -> None:
        if len(self.options) < 2 or not 0 <= self.answer < len(self.options):
            raise ValueError(
                f"a choice item needs >= 2 options and an answer index among them, "
                f"got {len(self.options)} options and answer {self.answer}"
            )


@dataclass(frozen=True)
class ChoiceResult:
    """Accuracy when the model picks the option it finds most likely, in total and per
    token."""

    accuracy: float
    normalized_accuracy: (
        float  # per token: long options are not penalised for having more tokens
    )
    picks: list[int]
    normalized_picks: list[int]


@torch.no_grad()
def answer_logprobs(
    model: nn.Module,
    sequences: Sequence[tuple[list[int], list[bool]]],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """For each (ids, scored) sequence: the sum of log p(token | tokens before it) over
    its scored tokens, and how many they are. Sequences are right-padded: causal
    attention keeps padding out of real tokens."""
    out = []
    with _evaluating(model):
        for first in range(0, len(sequences), batch_size):
            chunk = sequences[first : first + batch_size]
            ids = pad_right([seq for seq, _ in chunk], 0).to(_device(model))
            scored = (
                pad_right([[int(f) for f in flags] for _, flags in chunk], 0)
                .bool()
                .to(_device(model))
            )
            sums = sequence_logprobs(model, ids, scored)
            out += zip(sums.tolist(), scored[:, 1:].sum(-1).tolist())
    return out


def multiple_choice_accuracy(
    model: nn.Module,
    tokenizer: Tokenizer,
    items: Sequence[ChoiceItem],
    template: str | ChatTemplate = CHATML,
    batch_size: int = 16,
) -> ChoiceResult:
    """The model picks the option with the highest log-likelihood as the assistant's
    answer to the prompt.

    The scored tokens are exactly those SFT trains on: the option and the end-of-turn
    token after it, which says the answer ends there (so an option that is a prefix of
    another is not favoured). Scoring needs no generation, so it also measures a base
    model that has not learned the chat format yet.
    """
    if not items:
        raise ValueError("no multiple-choice items to score")
    sequences = [
        encode_chat(
            tokenizer,
            [
                {"role": "user", "content": item.prompt},
                {"role": "assistant", "content": option},
            ],
            template,
        )
        for item in items
        for option in item.options
    ]
    longest = max(len(ids) - 1 for ids, _ in sequences)
    _check_context(model, longest, f"a prompt with an option ({longest} tokens) is")
    scores = iter(answer_logprobs(model, sequences, batch_size))
    picks, normalized = [], []
    for item in items:
        mine = [next(scores) for _ in item.options]
        picks.append(max(range(len(mine)), key=lambda i: mine[i][0]))
        normalized.append(max(range(len(mine)), key=lambda i: mine[i][0] / mine[i][1]))
    answers = [item.answer for item in items]
    return ChoiceResult(
        float(np.mean(np.equal(picks, answers))),
        float(np.mean(np.equal(normalized, answers))),
        picks,
        normalized,
    )


def play_choice_items(
    examples: Sequence[Example], plays: Sequence[str], n_options: int = 4, seed: int = 0
) -> list[ChoiceItem]:
    """The "play" questions as multiple choice: the right play among n_options - 1
    others drawn at random. Chance is 1 / n_options, a floor that exact-match accuracy
    lacks."""
    plays = sorted(set(plays))
    if not 2 <= n_options <= len(plays):
        raise ValueError(
            "n_options must lie between 2 and the number of plays "
            f"({len(plays)}), got {n_options}"
        )
    rng = random.Random(seed)
    items = []
    for example in (e for e in examples if e.task == "play"):
        options = [example.answer] + rng.sample(
            [p for p in plays if p != example.answer], n_options - 1
        )
        rng.shuffle(options)
        items.append(
            ChoiceItem(
                example.prompt,
                tuple(options),
                options.index(example.answer),
                example.task,
            )
        )
    return items
