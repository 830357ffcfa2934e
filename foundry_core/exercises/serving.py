"""Exercise of chapter 05: the rule by which speculative decoding keeps a draft's
guesses, checked against the engine's."""

from __future__ import annotations

from ..speculative import accept
from .check import Case, Exercise, Mistake, register


def _accept_cases() -> list[Case]:
    return [
        Case("the second of four guesses is wrong", ([7, 3, 9, 4], [7, 5, 9, 4, 1])),
        Case("every guess is right", ([7, 3, 9], [7, 3, 9, 2])),
        Case("the first guess is wrong", ([7, 3], [6, 3, 8])),
        Case("a wrong guess, then guesses that match again", ([1, 2, 3], [1, 4, 3, 5])),
    ]


def _every_match(guesses, best):
    kept = [g for g, b in zip(guesses, best) if g == b]
    return kept + [best[len(kept)]]


register(
    Exercise(
        "speculative_accept",
        "05",
        "Speculative decoding: keep the draft's guesses the model agrees with",
        "easy",
        "accept(guesses, best) -> tokens   # best: the model's token after each "
        "prefix of guesses (one more than guesses)",
        accept,
        _accept_cases,
        [
            Mistake(
                "stop at the first wrong guess: every later guess was made after a "
                "token the model would not write",
                _every_match,
            ),
            Mistake(
                "after the agreed guesses, add the model's own token: a round always "
                "yields at least one token",
                lambda guesses, best: accept(guesses, best)[:-1],
            ),
        ],
    )
)
