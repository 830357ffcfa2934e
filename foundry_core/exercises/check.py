"""The checker: run the reader's function and the library's on the same inputs.

Each exercise lists inputs (typical ones and edge cases), the library function that
gives the right answer, and the usual mistakes, each as a small wrong implementation
with the hint it deserves. When the reader's answer differs from the library's, the
checker tries the mistakes: if one of them gives exactly the reader's answer, the hint
names that mistake rather than a generic "wrong".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch


def seeded_randn(*shape: int, seed: int = 0) -> torch.Tensor:
    """Standard normal numbers, the same on every run: the inputs of the cases."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Case:
    """One input to try: what it is (shown to the reader) and the arguments."""

    what: str
    args: tuple


@dataclass(frozen=True)
class Mistake:
    """A usual wrong answer: a function that makes it, and the hint for it."""

    hint: str
    wrong: Callable


@dataclass(frozen=True)
class Exercise:
    """What the reader writes (`signature`), and how it is checked."""

    name: str
    chapter: str
    idea: str
    difficulty: str  # "easy", "medium" or "hard"
    signature: str
    reference: Callable
    cases: Callable[[], Sequence[Case]]
    mistakes: Sequence[Mistake] = ()
    hint: str = "compare your steps with the chapter's explanation"
    atol: float = 1e-5
    # "Swap it in": `adapt` turns a piece (the reader's, the reference, a mistake) into
    # what is compared: a short run with that piece inside the library's model or
    # trainer.
    adapt: Callable[[Callable], Callable] | None = None
    # names entry i of a compared list in messages ("step 3" of a run)
    item: Callable[[int], str] = "item {}".format


@dataclass(frozen=True)
class Result:
    """The outcome of a check; truthy only when every case passed."""

    name: str
    status: str  # "passed", "failed" or "not done"
    message: str
    checked: tuple[str, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return self.status == "passed"

    def __str__(self) -> str:
        return self.message

    def _ipython_display_(self) -> None:
        """Nothing: check() has printed the message already, and a check cell ends
        with the call, so Jupyter would otherwise show it a second time."""


REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    if exercise.name in REGISTRY:
        raise ValueError(f"exercise '{exercise.name}' is registered twice")
    REGISTRY[exercise.name] = exercise
    return exercise


def check(name: str, function: Callable, quiet: bool = False) -> Result:
    """Check the reader's `function` for exercise `name`, print what happened, and
    return the Result (truthy when it passed)."""
    if name not in REGISTRY:
        raise ValueError(
            f"no exercise called '{name}': choose one of {', '.join(sorted(REGISTRY))}"
        )
    result = _run(REGISTRY[name], function)
    if not quiet:
        print(result.message)
    return result


def _run(exercise: Exercise, function: Callable) -> Result:
    if not callable(function):
        return Result(exercise.name, "failed", f"{exercise.name}: pass the function")
    reference = exercise.reference
    if exercise.adapt is not None:
        function = exercise.adapt(_stub_guard(function))
        reference = exercise.adapt(reference)
    checked = []
    for number, case in enumerate(exercise.cases()):
        expected = reference(*copy.deepcopy(case.args))
        try:
            got = function(*copy.deepcopy(case.args))
        except NotImplementedError:
            return _not_done(exercise)
        except Exception as error:  # the reader's code: any error is a finding
            return _failed(
                exercise, case, f"it raised {type(error).__name__}: {error}", None
            )
        if number == 0 and (got is None or got is Ellipsis):
            return _not_done(exercise)
        problem = _difference(got, expected, exercise.atol, exercise.item)
        if problem:
            return _failed(exercise, case, problem, got)
        checked.append(case.what)
    message = (
        f"✓ {exercise.name}: passed all {len(checked)} cases ({'; '.join(checked)})"
    )
    return Result(exercise.name, "passed", message, tuple(checked))


def _stub_guard(piece: Callable) -> Callable:
    """The reader's piece, raising NotImplementedError while it is still a stub (a body
    of `...` returns None), so that a run with it in place stops with "not done"."""

    def guarded(*args):
        out = piece(*args)
        if out is None or out is Ellipsis:
            raise NotImplementedError
        return out

    return guarded


def _not_done(exercise: Exercise) -> Result:
    return Result(
        exercise.name,
        "not done",
        f"… {exercise.name}: not done yet. Write {exercise.signature}, "
        "then run this cell again.",
    )


def _failed(exercise: Exercise, case: Case, problem: str, got: Any) -> Result:
    hint = exercise.hint
    if got is not None:
        for mistake in exercise.mistakes:
            make_it = mistake.wrong
            if exercise.adapt is not None:
                make_it = exercise.adapt(make_it)
            try:
                wrong = make_it(*copy.deepcopy(case.args))
            except Exception:
                continue
            if not _difference(got, wrong, exercise.atol, exercise.item):
                hint = mistake.hint
                break
    message = f"✗ {exercise.name}: wrong on {case.what}: {problem}\n  hint: {hint}"
    return Result(exercise.name, "failed", message)


def _difference(
    got: Any, expected: Any, atol: float, item: Callable[[int], str] = "item {}".format
) -> str:
    """'' when `got` matches `expected`, else what differs, in a line."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if not torch.allclose(
            got.double(), expected.double(), atol=atol, rtol=1e-4, equal_nan=True
        ):
            gap = (got.double() - expected.double()).abs()
            at = np.unravel_index(int(gap.argmax()), tuple(gap.shape))
            return (
                f"at index {tuple(int(i) for i in at)} expected "
                f"{expected[at].item():.6g}, got {got[at].item():.6g}"
            )
        return ""
    if isinstance(expected, (tuple, list)) and not isinstance(expected, str):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected {_short(expected)}, got {_short(got)}"
        for index, (g, e) in enumerate(zip(got, expected)):
            problem = _difference(g, e, atol)
            if problem:
                return f"{item(index)}: {problem}"
        return ""
    if isinstance(expected, float):
        if got == expected:  # also equal infinities
            return ""
        try:
            close = abs(float(got) - expected) <= atol + 1e-6 * abs(expected)
        except (TypeError, ValueError):
            return f"expected a number, got {_short(got)}"
        return "" if close else f"expected {expected:.6g}, got {float(got):.6g}"
    if got != expected:
        return f"expected {_short(expected)}, got {_short(got)}"
    return ""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(dict(value) if hasattr(value, "most_common") else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
