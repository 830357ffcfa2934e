"""Exercises the reader writes and the course checks.

    from foundry_core.exercises import check
    check("rmsnorm", my_rmsnorm)

runs the reader's function and the library's on the same inputs (typical ones and edge
cases) and prints whether they agree; when they do not, it names the first input that
differs and a hint aimed at the usual mistake. A function that is still a stub
(`raise NotImplementedError`, or a body of `...`) gets "not done yet". `exercises()`
lists them all.
"""

# importing the exercise modules registers their exercises
from . import (  # noqa: F401
    adapters,
    alignment,
    basics,
    chat,
    measure,
    reinforcement,
    serving,
    swap,
    training,
    transformer,
)
from .check import REGISTRY, Exercise, Result, check
from .training import ADAMW


def exercises() -> list[Exercise]:
    """Every exercise, in chapter order."""
    return sorted(REGISTRY.values(), key=lambda e: e.chapter)


__all__ = ["ADAMW", "Exercise", "Result", "check", "exercises"]
