"""How sure is a measured accuracy, or a difference between two models?

A test set is a sample: 30 right out of 100 is "somewhere between 22% and 40%", not
"30%". These intervals say how far a number can be trusted before a chapter claims it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def proportion_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% (Wilson score) interval for an accuracy of successes / n.

    An accuracy over a few hundred questions is itself noisy: 0.32 of 150 is compatible
    with anything from about 0.25 to 0.40. "Above chance" is a claim the data supports
    when the interval's low end is above it. Wilson's interval, unlike mean +- z * se,
    stays inside [0, 1] and is sound near 0 and 1.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    share, z2 = successes / n, z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedDifference:
    """The mean of (after - before) over the same items, with a confidence interval for
    it."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        interval = f"95% interval {self.low:+.3f} to {self.high:+.3f}"
        return f"{self.mean:+.3f} ({interval}, n={self.n})"


def paired_difference(
    before: Sequence[float], after: Sequence[float], z: float = 1.96
) -> PairedDifference:
    """How much `after` beats `before` on the same items (questions, pairs), and how
    sure we can be.

    Two models answering the same questions agree on most of them; only the questions
    where they differ carry information. Pairing the scores item by item uses that: the
    interval is mean +- z * sd / sqrt(n) of the per-item differences, much narrower than
    treating the two accuracies as independent. With z = 1.96 it covers the true
    difference in about 95% of runs (a normal approximation, sound for a few hundred
    items). "after is better" is a claim the data supports when `low > 0`.
    """
    if len(before) != len(after) or len(before) < 2:
        raise ValueError(
            "need two equally long score lists of at least 2 items, "
            f"got {len(before)} and {len(after)}"
        )
    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    mean, half = (
        float(diffs.mean()),
        z * float(diffs.std(ddof=1)) / math.sqrt(len(diffs)),
    )
    return PairedDifference(mean, mean - half, mean + half, len(diffs))
