"""Exact and near-duplicate detection: hashing, MinHash and LSH, written out in numpy.

Web corpora repeat themselves: mirrors, boilerplate, the same story with a changed name.
Duplicates waste compute and teach the model to memorise, so we remove them in two
passes:

- exact: documents whose normalised text hashes to the same digest;
- near: documents whose sets of word 5-grams ("shingles") overlap a lot (Jaccard
  similarity). Comparing every pair is quadratic, so MinHash compresses each set into
  `num_perm` numbers whose agreement rate estimates the Jaccard, and LSH banding finds
  the likely pairs without looking at all of them. Candidates are then verified on
  their signatures.

Semantics: a pair is reported when its *estimated* Jaccard is >= `threshold`. The
estimate is a share of num_perm coin flips, with standard deviation
sqrt(J * (1 - J) / num_perm): at most 0.044 for 128 permutations, so a reported pair's
true Jaccard is rarely more than 0.1 below the threshold (2.3 sd), and pairs just above
it are sometimes missed. Quadruple num_perm to halve the error.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..config import require_positive_ints
from .clean import split_words

MERSENNE_PRIME = (1 << 61) - 1  # p = 2**61 - 1: reducing mod p is a shift and an add
# the signature entry of an empty set; real hashes are < p
EMPTY = np.uint64(np.iinfo(np.uint64).max)
_P = np.uint64(MERSENNE_PRIME)
_CHUNK = 256  # shingles hashed per block in MinHasher.signature
_LOW32, _LOW29 = np.uint64((1 << 32) - 1), np.uint64((1 << 29) - 1)
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_for_dedup(text: str) -> str:
    """Lowercase, drop punctuation and collapse whitespace, so trivial edits don't hide
    a copy."""
    # NFKC: full-width and ligature forms fold
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCTUATION.sub("", text).split())


def _digest(text: str, size: int) -> bytes:
    """blake2b is stable across runs and machines, unlike Python's salted hash()."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()


def exact_duplicates(docs: Sequence[str]) -> list[list[int]]:
    """Groups (size >= 2, each sorted, ordered by first index) of documents with equal
    normalised text."""
    groups: dict[bytes, list[int]] = {}
    for i, doc in enumerate(docs):
        groups.setdefault(_digest(normalize_for_dedup(doc), 16), []).append(i)
    return [g for g in groups.values() if len(g) >= 2]


def exact_dedup(docs: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Indices to keep (the first of each group, and every unique doc) and the
    duplicate groups."""
    groups = exact_duplicates(docs)
    dropped = {i for g in groups for i in g[1:]}
    return [i for i in range(len(docs)) if i not in dropped], groups


def shingles(text: str, k: int = 5) -> set[int]:
    """Word k-grams of the normalised text (a Chinese character is a word), each
    hashed to a 32-bit int.

    Short texts (fewer than k words) fall back to character k-grams, or to the whole
    text when it is shorter than k characters, so they still have something to compare.
    32 bits keep every value below 2**32, which MinHasher's overflow-free arithmetic
    relies on; collisions are rare at corpus scale.
    """
    require_positive_ints(k=k)
    text = normalize_for_dedup(text)
    words = split_words(text)
    if len(words) >= k:
        grams = [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]
    else:
        grams = (
            [text[i : i + k] for i in range(max(len(text) - k + 1, 1))] if text else []
        )
    return {int.from_bytes(_digest(g, 4), "little") for g in grams}


def _mod_p(y: np.ndarray) -> np.ndarray:
    """y mod (2**61 - 1) for uint64 y, using 2**61 = 1 (mod p): fold the top bits onto
    the bottom."""
    y = (y & _P) + (y >> np.uint64(61))
    return np.where(y >= _P, y - _P, y)


def _mul_mod_p(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a * x mod p without overflow, for a < 2**61 and x < 2**32 (uint64,
    broadcastable).

    a * x can reach 2**93, so split a = hi * 2**32 + lo: lo * x < 2**64 fits, and
    hi * x = t < 2**61. Then t * 2**32 = (t >> 29) * 2**61 + (t & (2**29 - 1)) * 2**32,
    and 2**61 = 1 (mod p).
    """
    low = _mod_p((a & _LOW32) * x)
    t = (a >> np.uint64(32)) * x
    high = ((t & _LOW29) << np.uint64(32)) + (t >> np.uint64(29))  # < 2**61 + 2**32
    return _mod_p(low + high)


class MinHasher:
    """MinHash with `num_perm` universal hash functions
    h(x) = (a * x + b) mod (2**61 - 1).

    Each h acts like a random permutation of the shingle ids; the chance that two sets
    share the minimum of h is exactly their Jaccard, so the share of equal signature
    entries estimates it.
    """

    def __init__(self, num_perm: int = 128, seed: int = 0) -> None:
        require_positive_ints(num_perm=num_perm)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(seed)
        self.num_perm, self.seed = num_perm, seed
        self.a = rng.integers(1, MERSENNE_PRIME, size=(num_perm, 1), dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE_PRIME, size=(num_perm, 1), dtype=np.uint64)

    def signature(self, shingle_set: Iterable[int]) -> np.ndarray:
        """The (num_perm,) minima; an empty set gets all EMPTY, matching nothing."""
        x = np.fromiter(shingle_set, dtype=np.uint64)
        if x.size == 0:
            return np.full(self.num_perm, EMPTY, dtype=np.uint64)
        if int(x.max()) >= 1 << 32:
            raise ValueError("shingle ids must be < 2**32: build them with shingles()")
        # Hash a chunk of shingles at a time: each (num_perm, chunk) block of
        # temporaries stays in the CPU cache, instead of a dozen full-size arrays making
        # trips through main memory.
        best = np.full(self.num_perm, EMPTY, dtype=np.uint64)
        for start in range(0, x.size, _CHUNK):
            block = _mod_p(_mul_mod_p(self.a, x[None, start : start + _CHUNK]) + self.b)
            np.minimum(best, block.min(axis=1), out=best)
        return best

    def signatures(self, shingle_sets: Sequence[Iterable[int]]) -> np.ndarray:
        """(n_docs, num_perm) uint64 signatures, one row per document."""
        out = np.empty((len(shingle_sets), self.num_perm), dtype=np.uint64)
        for row, shingle_set in enumerate(shingle_sets):
            out[row] = self.signature(shingle_set)
        return out


def jaccard(set_a: set[int], set_b: set[int]) -> float:
    """Exact |A & B| / |A | B|; 0.0 when either set is empty (empty documents
    match nothing)."""
    if not set_a or not set_b:
        return 0.0
    return len(set_a & set_b) / len(set_a | set_b)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The share of equal signature entries; 0.0 when either comes from an empty set."""
    if sig_a.shape != sig_b.shape:
        raise ValueError(
            f"signatures differ in shape: {sig_a.shape} vs {sig_b.shape}; "
            "use one MinHasher"
        )
    if sig_a[0] == EMPTY or sig_b[0] == EMPTY:
        return 0.0
    return float(np.mean(sig_a == sig_b))


def threshold(bands: int, rows: int) -> float:
    """The Jaccard where LSH's S-curve P(candidate) = 1 - (1 - J**rows)**bands rises:
    (1/bands)**(1/rows)."""
    return (1.0 / bands) ** (1.0 / rows)


def lsh_candidates(
    signatures: np.ndarray, bands: int, rows: int
) -> set[tuple[int, int]]:
    """Pairs (i < j) whose signatures agree on every row of at least one band.

    Rows within a band must all match (AND), any band suffices (OR): similar pairs
    almost surely collide somewhere, dissimilar ones almost never, and we never touch
    the n**2 / 2 other pairs.
    """
    num_perm = signatures.shape[1]
    _check_banding(bands, rows, num_perm)
    live = np.flatnonzero(signatures[:, 0] != EMPTY)  # empty documents join no bucket
    pairs: set[tuple[int, int]] = set()
    for b in range(bands):
        band = signatures[live, b * rows : (b + 1) * rows]
        # equal band rows, equal bucket
        _, bucket = np.unique(band, axis=0, return_inverse=True)
        bucket = bucket.reshape(-1)
        order = np.argsort(bucket, kind="stable")
        for members in np.split(live[order], np.cumsum(np.bincount(bucket))[:-1]):
            if len(members) >= 2:
                pairs.update(itertools.combinations(members.tolist(), 2))
    return pairs


@dataclass
class NearDuplicates:
    """Verified pairs (i, j, estimated Jaccard) with i < j, and the clusters they link
    (size >= 2)."""

    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)
    # LSH candidates before verification: how much work banding saved
    num_candidates: int = 0


def near_duplicates(
    docs: Sequence[str],
    k: int = 5,
    num_perm: int = 128,
    bands: int = 32,
    rows: int = 4,
    threshold: float = 0.5,
    seed: int = 0,
) -> NearDuplicates:
    """Find pairs whose estimated shingle Jaccard is >= threshold, and cluster them.

    Clusters are connected components, so A~B and B~C put A, B, C together even if A
    and C differ more: the usual, deliberately greedy choice for deduplication.
    """
    require_positive_ints(k=k, num_perm=num_perm, bands=bands, rows=rows)
    _check_banding(bands, rows, num_perm)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0 < threshold <= 1
    ):
        raise ValueError(
            f"threshold must be in (0, 1], got {threshold!r}: 0.5 to 0.8 are usual"
        )
    sigs = MinHasher(num_perm, seed).signatures([shingles(d, k) for d in docs])
    candidates = sorted(lsh_candidates(sigs, bands, rows))
    pairs = []
    if candidates:
        i, j = np.array(candidates).T
        estimates = (sigs[i] == sigs[j]).mean(axis=1)
        pairs = [
            (a, b, float(e))
            for a, b, e in zip(i.tolist(), j.tolist(), estimates)
            if e >= threshold
        ]
    return NearDuplicates(
        pairs, _connected_components(len(docs), pairs), len(candidates)
    )


def minhash_dedup(docs: Sequence[str], **kwargs) -> tuple[list[int], NearDuplicates]:
    """Indices to keep (the lowest of each cluster, and every unclustered doc) and
    the result."""
    result = near_duplicates(docs, **kwargs)
    dropped = {i for cluster in result.clusters for i in cluster[1:]}
    return [i for i in range(len(docs)) if i not in dropped], result


def _connected_components(
    n: int, pairs: Iterable[tuple[int, int, float]]
) -> list[list[int]]:
    """Union-find; each root is its component's lowest index, so clusters are sorted."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) >= 2]


def _check_banding(bands: int, rows: int, num_perm: int) -> None:
    """LSH splits each signature into bands of rows, so the two must tile it exactly."""
    if bands * rows != num_perm:
        fit = (
            rows
            if num_perm % rows == 0
            else max(d for d in range(1, rows + 1) if num_perm % d == 0)
        )
        raise ValueError(
            f"bands * rows must equal num_perm: got {bands} * {rows} = "
            f"{bands * rows} for num_perm={num_perm};"
            f" try bands={num_perm // fit}, rows={fit}"
        )
