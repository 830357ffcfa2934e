"""Did the test leak into training? Shared word n-grams between test and training text.

A model that saw its test items while training scores well for the wrong reason, so an
evaluation reports, for each test text, the share of its n-grams found in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\w+(?:'\w+)*")


# odd, so the hash below mixes every word of an n-gram
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped: a copied line still matches after
    re-punctuation."""
    return _WORD.findall(text.lower())


def ngram_hashes(word_ids: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit hash per n-gram, computed for all n-grams at once (a false match needs
    a collision)."""
    count = len(word_ids) - n + 1
    hashes = np.zeros(max(count, 0), dtype=np.uint64)
    for k in range(n if count > 0 else 0):
        hashes = hashes * _MULTIPLIER + word_ids[k : k + count].astype(np.uint64)
    return hashes


@dataclass(frozen=True)
class ContaminationReport:
    """For each evaluation item, the share of its word n-grams that also occur in the
    training texts."""

    n: int
    shares: list[float]
    threshold: float = 0.5

    @property
    def overlapping(self) -> int:
        return sum(s > 0 for s in self.shares)

    @property
    def flagged(self) -> list[int]:
        """Indices of the items mostly found in the training texts (share above the
        threshold)."""
        return [i for i, s in enumerate(self.shares) if s > self.threshold]

    def summary(self) -> str:
        return (
            f"{self.overlapping} of {len(self.shares)} items share a {self.n}-gram "
            "with the training texts; "
            f"{len(self.flagged)} are more than {self.threshold:.0%} copied"
        )


def contamination(
    eval_texts: Sequence[str],
    train_texts: Sequence[str],
    n: int = 8,
    threshold: float = 0.5,
) -> ContaminationReport:
    """Which evaluation items appear, word for word, in the training texts.

    The training n-grams become one sorted array of 64-bit hashes (8 bytes each, however
    long the corpus), searched by bisection. An item shorter than n words is checked as
    one phrase of its own length. Compare the items' content, not their template: a
    prompt wrapper shared with the training prompts always matches.
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
