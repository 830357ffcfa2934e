"""Exercises of chapters 01-04: deduplication, BPE, the Transformer's pieces, and the
training step. Each is checked against the library function the chapter shows."""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np
import torch

from ..bpe import merge_pair, pair_counts
from ..data.dedup import (
    MinHasher,
    estimate_jaccard,
    jaccard,
    normalize_for_dedup,
    shingles,
)
from .check import Case, Exercise, Mistake, register


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- chapter 01: data


def _jaccard_cases() -> list[Case]:
    a, b = (
        shingles("to be or not to be that is the question", 3),
        shingles("to be or not to be that was the question", 3),
    )
    return [
        Case("two overlapping shingle sets", (a, b)),
        Case("identical sets", (a, set(a))),
        Case("disjoint sets", ({1, 2}, {3, 4})),
        Case("an empty set (an empty document matches nothing)", (set(), {1, 2})),
        Case("two empty sets (still nothing in common)", (set(), set())),
    ]


register(
    Exercise(
        "jaccard",
        "01",
        "Jaccard similarity of two documents' shingle sets",
        "easy",
        "jaccard(set_a, set_b) -> float",
        jaccard,
        _jaccard_cases,
        [
            Mistake(
                "divide by the size of the union |A | B|, not the sum |A| + |B|",
                lambda a, b: len(a & b) / (len(a) + len(b)) if a and b else 0.0,
            ),
            Mistake(
                "an empty set shares nothing: return 0.0 when either set is empty",
                lambda a, b: len(a & b) / len(a | b) if a | b else 1.0,
            ),
        ],
    )
)


def _signature_cases() -> list[Case]:
    hasher = MinHasher(num_perm=64, seed=0)
    texts = (
        "shall i compare thee to a summer's day thou art more lovely",
        "shall i compare thee to a winter's day thou art more lovely",
        "now is the winter of our discontent made glorious summer",
    )
    sigs = [hasher.signature(shingles(t, 3)) for t in texts]
    return [
        Case("two near-duplicate lines", (sigs[0], sigs[1])),
        Case("two different lines", (sigs[0], sigs[2])),
        Case("a line and itself", (sigs[0], sigs[0].copy())),
    ]


register(
    Exercise(
        "estimate_jaccard",
        "01",
        "MinHash: the share of equal signature entries estimates Jaccard",
        "easy",
        "estimate_jaccard(sig_a, sig_b) -> float",
        estimate_jaccard,
        _signature_cases,
        [
            Mistake(
                "compare the signatures position by position (sig_a == sig_b), "
                "not as sets of values",
                lambda a, b: jaccard(set(a.tolist()), set(b.tolist())),
            ),
            Mistake(
                "take the mean of the matches, not their count",
                lambda a, b: float(np.sum(a == b)),
            ),
        ],
    )
)


# ---------------------------------------------------------------- chapter 02: BPE


def _as_word(text: str) -> tuple[bytes, ...]:
    return tuple(bytes([b]) for b in text.encode())


def _pair_count_cases() -> list[Case]:
    return [
        Case(
            "three words, counted with their frequencies",
            (
                Counter(
                    {_as_word("low"): 5, _as_word("lower"): 2, _as_word("newest"): 6}
                ),
            ),
        ),
        Case(
            "a repeated pair inside one word ('aaa')", (Counter({_as_word("aaa"): 1}),)
        ),
        Case("a one-byte word (no pairs)", (Counter({_as_word("a"): 3}),)),
    ]


register(
    Exercise(
        "pair_counts",
        "02",
        "BPE: count each adjacent pair, weighted by the word's frequency",
        "easy",
        "pair_counts(words: dict[tuple[bytes, ...], int]) -> Counter",
        pair_counts,
        _pair_count_cases,
        [
            Mistake(
                "a word seen 5 times contributes its pairs 5 times: "
                "add the word's count, not 1",
                lambda words: Counter(p for w in words for p in zip(w, w[1:])),
            ),
        ],
    )
)


def _merge_cases() -> list[Case]:
    return [
        Case("merging (b'l', b'o') in 'lower'", (_as_word("lower"), (b"l", b"o"))),
        Case("a pair that occurs twice ('lolo')", (_as_word("lolo"), (b"l", b"o"))),
        Case(
            "overlapping occurrences ('aaa' with (a, a))",
            (_as_word("aaa"), (b"a", b"a")),
        ),
        Case("a pair that does not occur", (_as_word("new"), (b"x", b"y"))),
    ]


def _merge_overlapping(word, pair):
    """The usual mistake: after a merge, the next position is the merged token's second
    half, so 'aaa' becomes (aa, aa) instead of (aa, a)."""
    out = []
    for i in range(len(word)):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(pair[0] + pair[1])
        elif not (i > 0 and (word[i - 1], word[i]) == pair):
            out.append(word[i])
    return tuple(out)


register(
    Exercise(
        "merge_pair",
        "02",
        "BPE: replace every occurrence of a pair by one token, left to right",
        "medium",
        "merge_pair(word: tuple[bytes, ...], pair) -> tuple[bytes, ...]",
        merge_pair,
        _merge_cases,
        [
            Mistake(
                "after merging a pair, skip both of its tokens: "
                "'aaa' with (a, a) is (aa, a), each byte used once",
                _merge_overlapping,
            ),
        ],
    )
)


def _normalize_cases() -> list[Case]:
    return [
        Case("case and punctuation", ("To be, or not to be: that is the question!",)),
        Case("runs of spaces, tabs and newlines", ("  to\tbe\n\n or   not ",)),
        Case("full-width letters (NFKC folds them)", ("ＴＯ ＢＥ",)),
    ]


register(
    Exercise(
        "normalize_for_dedup",
        "01",
        "Normalize text before hashing, so trivial edits do not hide a copy",
        "easy",
        "normalize_for_dedup(text) -> str   # NFKC, lower case, no punctuation, "
        "single spaces",
        normalize_for_dedup,
        _normalize_cases,
        [
            Mistake(
                "lower-case the text too: 'To' and 'to' are the same word",
                lambda t: " ".join(
                    "".join(c for c in t if c.isalnum() or c.isspace()).split()
                ),
            ),
            Mistake(
                "collapse every run of whitespace (spaces, tabs, newlines) into one "
                "space and strip the ends: ' '.join(text.split())",
                lambda t: "".join(
                    c
                    for c in unicodedata.normalize("NFKC", t).lower()
                    if c.isalnum() or c.isspace()
                ),
            ),
        ],
    )
)
