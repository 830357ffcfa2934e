"""Asking a model the task questions and scoring its answers by rule."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch

from ..generate import generate
from ..model import Transformer
from ..tokenizer import Tokenizer
from .chat import CHATML, ChatTemplate, encode_prompt, get_template
from .tasks import Example, PreferencePair, is_correct, is_well_formed


def answer(
    model: Transformer,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    template: str | ChatTemplate = CHATML,
    max_new_tokens: int = 16,
    batch_size: int = 64,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """The model's reply to each prompt, generated in batches (prompts of any lengths,
    left-padded), up to the template's end-of-turn token."""
    template = get_template(template)
    stop = template.end_of_turn(tokenizer)
    replies = []
    for start in range(0, len(prompts), batch_size):
        ids = [
            encode_prompt(tokenizer, p, template)
            for p in prompts[start : start + batch_size]
        ]
        new = generate(
            model,
            ids,
            max_new_tokens,
            temperature=temperature,
            stop_tokens=[stop],
            generator=generator,
        )
        replies += [tokenizer.decode(row) for row in new]
    return replies


@dataclass(frozen=True)
class Graded:
    example: Example
    response: str
    correct: bool


def grade(
    model: Transformer, tokenizer: Tokenizer, examples: Sequence[Example], **kwargs
) -> list[Graded]:
    responses = answer(model, tokenizer, [e.prompt for e in examples], **kwargs)
    return [Graded(e, r, is_correct(e, r)) for e, r in zip(examples, responses)]


def sampled_accuracy(
    model: Transformer,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    samples: int,
    temperature: float = 1.0,
    seed: int = 0,
    **kwargs,
) -> list[float]:
    """For each example, the share of `samples` sampled answers that are correct.

    One sample per question is a coin flip per question; the mean of several is a
    steadier measure of how often the model, sampling as it would in a chat, gets the
    question right (`kwargs` go to `answer`: template, max_new_tokens)."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    shares = [0.0] * len(examples)
    for _ in range(samples):
        replies = answer(
            model,
            tokenizer,
            [e.prompt for e in examples],
            temperature=temperature,
            generator=generator,
            **kwargs,
        )
        for i, (example, reply) in enumerate(zip(examples, replies)):
            shares[i] += is_correct(example, reply) / samples
    return shares


def well_formed_share(graded: Sequence[Graded], plays: Sequence[str]) -> float:
    """The share of answers of the right kind (tasks.is_well_formed), right or wrong."""
    return sum(is_well_formed(g.example, g.response, plays) for g in graded) / len(
        graded
    )


def accuracy_by_task(graded: Sequence[Graded]) -> dict[str, float]:
    """The share of correct answers per task, and over all of them ("all")."""
    groups = defaultdict(list)
    for g in sorted(graded, key=lambda g: g.example.task):
        groups[g.example.task].append(g.correct)
    groups["all"] = [g.correct for g in graded]
    return {task: sum(v) / len(v) for task, v in groups.items()}


def on_policy_pairs(
    model: Transformer,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    samples: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    **kwargs,
) -> list[PreferencePair]:
    """Preference pairs from the model's own mistakes: sample answers to each prompt,
    score them by rule, and pair a correct one (a sampled one if any, else the
    reference) with a sampled wrong one.

    These teach DPO exactly the errors this model makes; prompts it always answers right
    give no pair.
    """
    generator = torch.Generator().manual_seed(seed)
    prompts = [e.prompt for e in examples for _ in range(samples)]
    replies = answer(
        model,
        tokenizer,
        prompts,
        temperature=temperature,
        generator=generator,
        **kwargs,
    )
    rng = random.Random(seed)
    pairs = []
    for i, example in enumerate(examples):
        mine = replies[i * samples : (i + 1) * samples]
        right = [r for r in mine if is_correct(example, r)]
        wrong = [r for r in mine if not is_correct(example, r)]
        if wrong:
            chosen = rng.choice(right) if right else example.answer
            pairs.append(
                PreferencePair(
                    example.prompt, chosen, rng.choice(wrong), example.task, "on-policy"
                )
            )
    return pairs
