"""Measuring a model: perplexity on held-out text, accuracy on tasks, and whether the test leaked into training.

Perplexity says how well a model predicts text it never saw; task accuracy says whether it does what it is
asked. Both mean little if the test items were in the training data, so `contamination` checks that too.
"""

from __future__ import annotations

import math
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .align.chat import CHATML, ChatTemplate, encode_chat
from .align.respond import accuracy_by_task, grade
from .align.tasks import Example
from .sequences import IGNORE, pad_right, sequence_logprobs
from .tokenizer import Tokenizer

# ---------------------------------------------------------------- perplexity


def window_plan(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """(start, skip) of each window: it reads tokens start .. start + seq_len - 1, predicts the next seq_len,
    and leaves its first `skip` predictions unscored because the window before it scored them already.

    Windows start every `stride` tokens and a last one ends at the final token, so every token but the first
    is scored exactly once; after the first window, each with at least seq_len - stride tokens of context.
    """
    if seq_len < 1 or not 1 <= stride <= seq_len:
        raise ValueError(
            f"need seq_len >= 1 and 1 <= stride <= seq_len, got seq_len={seq_len}, stride={stride}"
        )
    if n_tokens < seq_len + 1:
        raise ValueError(
            f"{n_tokens} tokens are fewer than one window of seq_len + 1 = {seq_len + 1}: "
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
    """exp(mean negative log-likelihood per token) of held-out tokens: the model is, on average, as unsure as
    a uniform choice among that many tokens (a model that knows nothing scores its vocabulary size).

    Windows of seq_len tokens tile the text (see window_plan). With stride == seq_len (the default) each
    window starts from scratch, so its first tokens are predicted with almost no context; a smaller stride
    overlaps the windows and scores only each window's last `stride` tokens: every token is still scored
    once, with more context, at seq_len / stride times the compute. `max_windows` keeps only the first ones.
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
    """Mean KL(reference || model) in nats per token over held-out windows: how far `model`'s next-token
    distributions moved from `reference`'s. Zero only for identical predictions. Unlike a perplexity
    difference, which can fall either way by chance, it grows with every change to the weights, so it
    ranks two approximations of one model (int8 vs int4) reliably even when their perplexities tie.
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
    """(inputs, targets) batches of the windows that tile `tokens` (window_plan); targets the window
    shares with the one before are IGNORE, so every token is scored once. `max_windows` keeps the first."""
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
            f"tokens must be a flat array of token ids, got shape {tokens.shape} of {tokens.dtype}"
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
    """Evaluation mode (no dropout) for the duration, then back to whatever mode the caller had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- multiple choice


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
    """Accuracy when the model picks the option it finds most likely, in total and per token."""

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
    """For each (ids, scored) sequence: the sum of log p(token | tokens before it) over its scored tokens,
    and how many they are. Sequences are right-padded: causal attention keeps padding out of real tokens."""
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
    """The model picks the option with the highest log-likelihood as the assistant's answer to the prompt.

    The scored tokens are exactly those SFT trains on: the option and the end-of-turn token after it, which
    says the answer ends there (so an option that is a prefix of another is not favoured). Scoring needs no
    generation, so it also measures a base model that has not learned the chat format yet.
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
    """The "play" questions as multiple choice: the right play among n_options - 1 others drawn at random.
    Chance is 1 / n_options, a floor that exact-match accuracy lacks."""
    plays = sorted(set(plays))
    if not 2 <= n_options <= len(plays):
        raise ValueError(
            f"n_options must lie between 2 and the number of plays ({len(plays)}), got {n_options}"
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


def proportion_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% (Wilson score) interval for an accuracy of successes / n.

    An accuracy over a few hundred questions is itself noisy: 0.32 of 150 is compatible with anything from
    about 0.25 to 0.40. "Above chance" is a claim the data supports when the interval's low end is above
    it. Wilson's interval, unlike mean +- z * se, stays inside [0, 1] and is sound near 0 and 1.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    share, z2 = successes / n, z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------- two models on the same items


@dataclass(frozen=True)
class PairedDifference:
    """The mean of (after - before) over the same items, with a confidence interval for it."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:+.3f} (95% interval {self.low:+.3f} to {self.high:+.3f}, n={self.n})"


def paired_difference(
    before: Sequence[float], after: Sequence[float], z: float = 1.96
) -> PairedDifference:
    """How much `after` beats `before` on the same items (questions, pairs), and how sure we can be.

    Two models answering the same questions agree on most of them; only the questions where they differ
    carry information. Pairing the scores item by item uses that: the interval is mean +- z * sd / sqrt(n)
    of the per-item differences, much narrower than treating the two accuracies as independent. With
    z = 1.96 it covers the true difference in about 95% of runs (a normal approximation, sound for a few
    hundred items). "after is better" is a claim the data supports when `low > 0`.
    """
    if len(before) != len(after) or len(before) < 2:
        raise ValueError(
            f"need two equally long score lists of at least 2 items, got {len(before)} and {len(after)}"
        )
    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    mean, half = (
        float(diffs.mean()),
        z * float(diffs.std(ddof=1)) / math.sqrt(len(diffs)),
    )
    return PairedDifference(mean, mean - half, mean + half, len(diffs))


# ---------------------------------------------------------------- contamination

_WORD = re.compile(r"\w+(?:'\w+)*")
_MULTIPLIER = np.uint64(
    0x9E3779B97F4A7C15
)  # odd, so the hash below mixes every word of an n-gram


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped: a copied line still matches after re-punctuation."""
    return _WORD.findall(text.lower())


def ngram_hashes(word_ids: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit hash per n-gram, computed for all n-grams at once (a false match needs a collision)."""
    count = len(word_ids) - n + 1
    hashes = np.zeros(max(count, 0), dtype=np.uint64)
    for k in range(n if count > 0 else 0):
        hashes = hashes * _MULTIPLIER + word_ids[k : k + count].astype(np.uint64)
    return hashes


@dataclass(frozen=True)
class ContaminationReport:
    """For each evaluation item, the share of its word n-grams that also occur in the training texts."""

    n: int
    shares: list[float]
    threshold: float = 0.5

    @property
    def overlapping(self) -> int:
        return sum(s > 0 for s in self.shares)

    @property
    def flagged(self) -> list[int]:
        """Indices of the items mostly found in the training texts (share above the threshold)."""
        return [i for i, s in enumerate(self.shares) if s > self.threshold]

    def summary(self) -> str:
        return (
            f"{self.overlapping} of {len(self.shares)} items share a {self.n}-gram with the training texts; "
            f"{len(self.flagged)} are more than {self.threshold:.0%} copied"
        )


def contamination(
    eval_texts: Sequence[str],
    train_texts: Sequence[str],
    n: int = 8,
    threshold: float = 0.5,
) -> ContaminationReport:
    """Which evaluation items appear, word for word, in the training texts.

    The training n-grams become one sorted array of 64-bit hashes (8 bytes each, however long the corpus),
    searched by bisection. An item shorter than n words is checked as one phrase of its own length. Compare
    the items' content, not their template: a prompt wrapper shared with the training prompts always matches.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (8 is typical), got {n!r}")
    vocab: dict[
        str, int
    ] = {}  # word -> id from 1; 0 stands for a word the training texts never use
    train_ids = [
        np.array(
            [vocab.setdefault(w, len(vocab) + 1) for w in words(t)], dtype=np.uint64
        )
        for t in train_texts
    ]
    known: dict[int, np.ndarray] = {}

    def share(text: str) -> float:
        ids = np.array([vocab.get(w, 0) for w in words(text)], dtype=np.uint64)
        size = min(n, len(ids))
        if size == 0:
            return 0.0
        if size not in known:
            empty = [np.zeros(0, np.uint64)]
            known[size] = np.unique(
                np.concatenate([ngram_hashes(t, size) for t in train_ids] + empty)
            )
        grams, table = ngram_hashes(ids, size), known[size]
        found = (
            table[np.searchsorted(table, grams).clip(max=len(table) - 1)] == grams
            if len(table)
            else False
        )
        return float(np.mean(found))

    return ContaminationReport(n, [share(t) for t in eval_texts], threshold)


# ---------------------------------------------------------------- a table of models


def evaluate_models(
    models: dict[str, nn.Module],
    tokenizer: Tokenizer,
    val_tokens: np.ndarray | torch.Tensor,
    test_examples: Sequence[Example],
    seq_len: int,
    *,
    batch_size: int = 8,
    stride: int | None = None,
    max_windows: int | None = None,
    plays: Sequence[str] | None = None,
    template: str | ChatTemplate = CHATML,
    max_new_tokens: int = 16,
) -> list[dict]:
    """One row per model: held-out perplexity, exact-match accuracy per task (and "accuracy" over all), and,
    given the plays, multiple-choice accuracy on the "play" questions and their number ("choice_items").
    Ready for pandas.DataFrame(rows)."""
    rows = []
    for name, model in models.items():
        row: dict = {
            "model": name,
            "perplexity": perplexity(
                model, val_tokens, seq_len, batch_size, stride, max_windows
            ),
        }
        if test_examples:
            with _evaluating(model):
                graded = grade(
                    model,
                    tokenizer,
                    test_examples,
                    template=template,
                    max_new_tokens=max_new_tokens,
                )
            for task, value in accuracy_by_task(graded).items():
                row["accuracy" if task == "all" else f"accuracy_{task}"] = value
        items = (
            play_choice_items(test_examples, plays, n_options=min(4, len(set(plays))))
            if plays
            else []
        )
        if items:
            row["choice_accuracy"] = multiple_choice_accuracy(
                model, tokenizer, items, template
            ).accuracy
            row["choice_items"] = len(items)
        rows.append(row)
    return rows
