"""Exact and MinHash/LSH near-duplicate detection, checked against exact Jaccard.

The corpus is synthetic. Threshold semantics under test (documented in
foundry_core/data/dedup.py): a pair is reported when its *estimated* Jaccard is >=
threshold, so "precision" means the share of reported pairs whose true Jaccard is >=
threshold - 0.1 (the estimate's error band at 128 permutations), and recall is measured
on pairs clearly above the threshold (true Jaccard >= max(0.8, threshold + 0.1)).
At threshold 0.8 this is the usual pair of claims: recall on J >= 0.9, and precision
on J >= 0.7.
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations

import numpy as np
import pytest

from foundry_core.data.dedup import (
    EMPTY,
    MERSENNE_PRIME,
    MinHasher,
    _mul_mod_p,
    estimate_jaccard,
    exact_dedup,
    exact_duplicates,
    jaccard,
    lsh_candidates,
    minhash_dedup,
    near_duplicates,
    normalize_for_dedup,
    shingles,
    threshold,
)

N_BASE, N_WORDS, N_VARIANTS = 300, 200, 150


def test_normalize_folds_case_whitespace_and_punctuation():
    assert normalize_for_dedup("  Hello,\tWORLD!\n\nIt's  me. ") == "hello world its me"
    assert normalize_for_dedup("") == ""


def test_exact_dedup_finds_case_and_whitespace_variants():
    docs = [
        "The cat sat.",
        "a different doc",
        "the  CAT\nsat",
        "THE CAT SAT!!",
        "another one",
        "A different doc",
    ]
    assert exact_duplicates(docs) == [[0, 2, 3], [1, 5]]
    keep, groups = exact_dedup(docs)
    assert keep == [0, 1, 4] and groups == [[0, 2, 3], [1, 5]]
    assert exact_dedup([]) == ([], []) and exact_dedup(["only"]) == ([0], [])


def test_shingles_are_stable_across_processes():
    # Computed once with blake2b; Python's salted hash() would change these on every
    # interpreter start.
    got = shingles("The quick brown fox jumps over the lazy dog.")
    assert len(got) == 5 and sorted(got)[:3] == [1009995107, 1474705016, 2092225635]
    assert all(0 <= s < 2**32 for s in got)


def test_shingles_fall_back_to_characters_for_short_texts():
    # character 5-grams
    assert len(shingles("one two three")) == len("one two three") - 5 + 1
    assert (
        len(shingles("hi")) == 1 and shingles("") == set() and shingles("?!") == set()
    )
    assert shingles("Hello,  World") == shingles("hello world")


def test_mul_mod_p_matches_python_integers():
    r = random.Random(0)
    a = [1, 2**32 - 1, 2**32, MERSENNE_PRIME - 1] + [
        r.randrange(1, MERSENNE_PRIME) for _ in range(300)
    ]
    x = [0, 1, 2**31, 2**32 - 1] + [r.randrange(0, 2**32) for _ in range(300)]
    got = _mul_mod_p(
        np.array(a, dtype=np.uint64)[:, None], np.array(x, dtype=np.uint64)[None, :]
    )
    assert got.tolist() == [[ai * xi % MERSENNE_PRIME for xi in x] for ai in a]


def test_signature_is_the_exact_minimum_per_permutation():
    hasher = MinHasher(num_perm=16, seed=3)
    values = {0, 7, 2**32 - 1, 123456789, 4000000000}
    params = zip(hasher.a[:, 0].tolist(), hasher.b[:, 0].tolist())
    # Python ints: exact
    expected = [min((a * v + b) % MERSENNE_PRIME for v in values) for a, b in params]
    assert hasher.signature(values).tolist() == expected


def test_identical_sets_give_identical_signatures():
    hasher = MinHasher(num_perm=64, seed=1)
    s = shingles("the same words in the same order give the same shingles every time")
    sigs = hasher.signatures(
        [
            s,
            set(sorted(s, reverse=True)),
            shingles("something else entirely, not alike"),
        ]
    )
    assert sigs.shape == (3, 64) and sigs.dtype == np.uint64
    assert (
        np.array_equal(sigs[0], sigs[1]) and estimate_jaccard(sigs[0], sigs[1]) == 1.0
    )
    assert estimate_jaccard(sigs[0], sigs[2]) < 0.2
    # the seed matters
    assert not np.array_equal(MinHasher(64, seed=2).signature(s), sigs[0])


def test_empty_sets_never_match():
    hasher = MinHasher(num_perm=8)
    sigs = hasher.signatures([set(), set(), {1, 2, 3}])
    assert (sigs[:2] == EMPTY).all()
    assert estimate_jaccard(sigs[0], sigs[1]) == 0.0 and jaccard(set(), set()) == 0.0
    assert lsh_candidates(sigs, bands=4, rows=2) == set()
    assert near_duplicates(["", "   ", "!!!"], bands=32, rows=4).pairs == []


def test_empty_corpus_and_single_document():
    for docs in ([], ["just one document here, nothing to compare it with"]):
        keep, result = minhash_dedup(docs)
        assert (
            keep == list(range(len(docs)))
            and result.pairs == []
            and result.clusters == []
        )


def test_threshold_is_where_the_s_curve_rises():
    assert threshold(32, 4) == pytest.approx(32**-0.25)
    assert threshold(1, 1) == 1.0 and threshold(20, 5) < threshold(10, 10)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (
            dict(bands=30, rows=4),
            "bands * rows must equal num_perm: got 30 * 4 = 120 for num_perm=128; "
            "try bands=32, rows=4",
        ),
        (dict(bands=20, rows=5), "try bands=32, rows=4"),
        (dict(num_perm=0), "num_perm must be a positive integer, got 0"),
        (dict(k=2.5), "k must be a positive integer, got 2.5"),
        (dict(bands=True), "bands must be a positive integer"),
        (dict(threshold=0), "threshold must be in (0, 1], got 0"),
        (dict(threshold=1.5), "threshold must be in (0, 1], got 1.5"),
        (dict(seed=-1), "seed must be a non-negative integer, got -1"),
    ],
)
def test_invalid_parameters_fail_with_one_clear_line(kwargs, expected):
    assert expected in one_line_error(
        near_duplicates, ["a b c d e f", "a b c d e g"], **kwargs
    )


def test_lsh_candidates_checks_the_banding():
    sigs = MinHasher(num_perm=12).signatures([{1, 2}, {1, 2}])
    assert "try bands=3, rows=4" in one_line_error(
        lsh_candidates, sigs, bands=4, rows=4
    )
    assert lsh_candidates(sigs, bands=3, rows=4) == {(0, 1)}


def test_clusters_follow_chains_and_dedup_keeps_the_lowest_index():
    words = [f"w{i}" for i in range(60)]
    a = " ".join(words)
    a1 = " ".join(words[:58] + ["x", "y"])  # A's last two words changed
    a2 = " ".join(words[:56] + ["x", "y", "z", "q"])  # close to a1, further from A
    docs = [
        a,
        "completely unrelated text " * 5,
        a1,
        " ".join(f"v{i}" for i in range(60)),
        a2,
    ]
    keep, result = minhash_dedup(docs, threshold=0.8)
    assert result.clusters == [[0, 2, 4]] and keep == [0, 1, 3]
    assert all(i < j for i, j, _ in result.pairs)


# --- the synthetic corpus ---
# Random made-up words, plus variants with a controlled share of words edited.


def make_corpus(seed: int = 1234) -> list[str]:
    r = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]
    vocab = sorted(
        {"".join(r.choices(syllables, k=r.randint(2, 4))) for _ in range(4000)}
    )[:3000]
    docs = [[r.choice(vocab) for _ in range(N_WORDS)] for _ in range(N_BASE)]
    for _ in range(N_VARIANTS):
        # sometimes a variant of a variant: chains and clusters
        parent = docs[r.randrange(len(docs))]
        target = r.uniform(0.3, 0.97)
        # A 5-gram survives when none of its 5 words is edited:
        # J = s / (2 - s) with s = (1 - f)**5.
        edit_share = 1 - (2 * target / (1 + target)) ** (1 / 5)
        child = list(parent)
        for pos in r.sample(range(N_WORDS), max(1, round(edit_share * N_WORDS))):
            child[pos] = r.choice(vocab)
        docs.append(child)
    texts = [" ".join(d) for d in docs]
    texts[5] = texts[0].upper().replace(" ", "  ") + "!"  # an exact copy in disguise
    return texts


def true_jaccard_all_pairs(sets: list[set[int]]) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair sharing a shingle (via an inverted index).

    All other pairs have 0.
    """
    postings = defaultdict(list)
    for doc, s in enumerate(sets):
        for shingle in s:
            postings[shingle].append(doc)
    shared = defaultdict(int)
    for docs in postings.values():
        for pair in combinations(docs, 2):
            shared[pair] += 1
    return {
        (i, j): n / (len(sets[i]) + len(sets[j]) - n) for (i, j), n in shared.items()
    }


@pytest.fixture(scope="module")
def corpus():
    docs = make_corpus()
    truth = true_jaccard_all_pairs([shingles(d) for d in docs])
    assert (0, 5) in truth and truth[0, 5] == 1.0
    return docs, truth


def test_corpus_spans_the_interesting_range(corpus):
    _, truth = corpus
    similar = [j for j in truth.values() if j >= 0.25]
    assert (
        min(similar) < 0.35
        and max(similar) > 0.95
        and sum(j >= 0.8 for j in similar) >= 30
    )


def sigma(j: float, num_perm: int = 128) -> float:
    """Standard deviation of a MinHash estimate.

    The estimate is the share of num_perm Bernoulli(j) agreements.
    """
    return (j * (1 - j) / num_perm) ** 0.5


@pytest.mark.parametrize("cut, bands, rows", [(0.5, 32, 4), (0.8, 16, 8)])
def test_recall_precision_and_estimates_against_exact_jaccard(corpus, cut, bands, rows):
    docs, truth = corpus
    result = near_duplicates(
        docs, num_perm=128, bands=bands, rows=rows, threshold=cut, seed=0
    )
    reported = {(i, j): est for i, j, est in result.pairs}

    clearly_similar = [p for p, j in truth.items() if j >= max(0.8, cut + 0.1)]
    recall = sum(p in reported for p in clearly_similar) / len(clearly_similar)
    precision = sum(truth.get(p, 0.0) >= cut - 0.1 for p in reported) / len(reported)
    errors = {p: abs(est - truth.get(p, 0.0)) for p, est in reported.items()}
    within = sum(e <= 0.1 for e in errors.values()) / len(errors)
    print(
        f"threshold={cut} bands={bands} rows={rows}: "
        f"{len(reported)} pairs from {result.num_candidates} candidates; "
        f"recall={recall:.3f} over {len(clearly_similar)} pairs, "
        f"precision={precision:.3f}, "
        f"|est - true| <= 0.1 for {within:.3f}, max {max(errors.values()):.3f}"
    )
    assert recall >= 0.9
    assert precision >= 0.95
    # 0.1 is 2.3 sigma at J = 0.5 with 128 permutations, so a few of ~100 pairs may
    # exceed it by chance; none may exceed 4.5 sigma, which a correct estimator does
    # about once in 150,000 pairs.
    assert within >= 0.95
    assert all(e <= max(0.1, 4.5 * sigma(truth.get(p, 0.0))) for p, e in errors.items())
    # LSH looked at < 10% of all pairs
    assert result.num_candidates < len(docs) * (len(docs) - 1) // 20


def test_estimates_are_unbiased_with_binomial_spread(corpus):
    """Errors in units of sigma average ~0 with a spread of ~1.

    This holds on every similar pair, not only on the reported ones.
    """
    docs, truth = corpus
    sigs = MinHasher(num_perm=128, seed=0).signatures([shingles(d) for d in docs])
    z = np.array(
        [
            (estimate_jaccard(sigs[i], sigs[j]) - t) / sigma(t)
            for (i, j), t in truth.items()
            if 0.25 <= t < 1
        ]
    )
    print(
        f"{len(z)} pairs: mean z={z.mean():.3f}, std z={z.std():.3f}, "
        f"max |z|={np.abs(z).max():.2f}"
    )
    assert (
        len(z) >= 150
        and abs(z.mean()) <= 0.4
        and 0.75 <= z.std() <= 1.25
        and np.abs(z).max() <= 4.5
    )


def test_clusters_are_the_connected_components_of_the_pairs(corpus):
    docs, _ = corpus
    result = near_duplicates(docs)
    neighbours = defaultdict(set)
    for i, j, _ in result.pairs:
        neighbours[i].add(j)
        neighbours[j].add(i)
    components, seen = [], set()
    for start in sorted(neighbours):
        if start not in seen:
            stack, component = [start], set()
            while stack:
                node = stack.pop()
                if node not in component:
                    component.add(node)
                    stack.extend(neighbours[node] - component)
            seen |= component
            components.append(sorted(component))
    assert sorted(result.clusters) == components and any(
        len(c) >= 3 for c in components
    )
    keep, _ = minhash_dedup(docs)
    assert (
        len(keep) == len(docs) - sum(len(c) - 1 for c in components)
        and 0 in keep
        and 5 not in keep
    )
