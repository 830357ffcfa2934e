"""Byte-pair encoding written out in plain Python, to show how a tokenizer learns.

The course trains its real tokenizer with SentencePiece (tokenizer.py), which is fast
but hides the algorithm inside C++. This module is the same idea, small enough to read
in one sitting: count adjacent pairs, merge the most frequent one, repeat. Chapter 02
trains it on a toy text and shows each merge it learns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The pre-split rule (GPT-2's idea, simplified): a word is a run of non-space
# characters together with the single space before it; any other whitespace stands
# alone. Merges never cross a word boundary, so " cat" is learned once instead of once
# per neighbour, and the pieces join back to the text.
_WORD_RE = re.compile(r" ?\S+|\s+(?!\S)|\s+")


def split_words(text: str) -> list[str]:
    """Pre-split text into words; ``"".join(split_words(t)) == t`` always."""
    return _WORD_RE.findall(text)


@dataclass(frozen=True)
class Merge:
    """One learned rule: wherever ``pair`` stands side by side, write ``new_token``.

    ``count`` is how often the pair occurred when it was learned.
    """

    pair: tuple[bytes, bytes]
    new_token: bytes
    count: int


def pair_counts(words: Mapping[tuple[bytes, ...], int]) -> Counter[tuple[bytes, bytes]]:
    """Occurrences of each adjacent pair of tokens, each word weighted by its count."""
    counts: Counter[tuple[bytes, bytes]] = Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return counts


def merge_pair(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """Replace each ``pair``, left to right: b"a" b"a" b"a" -> b"aa" b"a"."""
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _as_bytes(word: str) -> tuple[bytes, ...]:
    return tuple(bytes([b]) for b in word.encode("utf-8"))


@dataclass
class BPEModel:
    """Byte-level BPE: ids 0-255 are the bytes, then one id per learned token."""

    merges: list[Merge]
    vocab: dict[int, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.vocab = {i: bytes([i]) for i in range(256)}
        self._ids = {token: i for i, token in self.vocab.items()}
        # Two merges can spell the same bytes; the token keeps its first id.
        for merge in self.merges:
            if merge.new_token not in self._ids:
                self._ids[merge.new_token] = len(self.vocab)
                self.vocab[len(self.vocab)] = merge.new_token
        self._cache: dict[str, list[int]] = {}

    def encode_word(self, word: str) -> list[int]:
        """Apply every merge in the order it was learned, exactly as training did."""
        if word not in self._cache:
            tokens = _as_bytes(word)
            for merge in self.merges:
                if len(tokens) < 2:
                    break
                tokens = merge_pair(tokens, merge.pair)
            self._cache[word] = [self._ids[t] for t in tokens]
        return self._cache[word]

    def encode(self, text: str) -> list[int]:
        return [i for word in split_words(text) for i in self.encode_word(word)]

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


def train_bpe(text: str, num_merges: int) -> BPEModel:
    """Learn up to ``num_merges`` merges, each of the most frequent adjacent pair.

    Ties go to the lexicographically smallest pair of bytes, so the result never depends
    on dict order. Training stops early once no pair occurs twice: merging a one-off
    pair saves nothing.
    """
    words = Counter(_as_bytes(w) for w in split_words(text))
    merges: list[Merge] = []
    for _ in range(num_merges):
        counts = pair_counts(words)
        if not counts:
            break
        pair, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merges.append(Merge(pair, pair[0] + pair[1], count))
        words = Counter({merge_pair(word, pair): freq for word, freq in words.items()})
    return BPEModel(merges)
