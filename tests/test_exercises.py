"""The exercise checkers: the library's own answer passes, every usual mistake fails
with its own hint, and a stub is "not done yet", never a traceback."""

import re
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from foundry_core.exercises import check, exercises
from foundry_core.exercises.check import REGISTRY

EXERCISES = exercises()
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_the_course_has_exercises_in_several_chapters():
    assert len(EXERCISES) >= 25
    per_chapter = {f"{n:02d}": 0 for n in range(1, 11)}
    for exercise in EXERCISES:
        per_chapter[exercise.chapter] += 1
    assert min(per_chapter.values()) >= 2, per_chapter
    assert all(e.mistakes for e in EXERCISES), "every checker knows a usual mistake"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_the_reference_answer_passes(exercise):
    result = check(exercise.name, exercise.reference, quiet=True)
    assert result and result.status == "passed", result.message
    assert len(result.checked) == len(exercise.cases())


MISTAKES = [(e, m) for e in EXERCISES for m in e.mistakes]


@pytest.mark.parametrize(
    "exercise, mistake",
    MISTAKES,
    ids=[f"{e.name}-{i}" for i, (e, _) in enumerate(MISTAKES)],
)
def test_each_usual_mistake_fails_with_its_hint(exercise, mistake):
    result = check(exercise.name, mistake.wrong, quiet=True)
    assert not result and result.status == "failed"
    assert f"hint: {mistake.hint}" in result.message, result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_a_stub_is_not_done_yet(exercise):
    def raises(*args):
        raise NotImplementedError

    def ellipsis(*args): ...

    for stub in (raises, ellipsis):
        result = check(exercise.name, stub, quiet=True)
        assert result.status == "not done" and "not done yet" in result.message


def test_an_error_in_the_readers_code_is_reported_not_raised(capsys):
    def broken(set_a, set_b):
        return len(set_a & set_b) / 0

    result = check("jaccard", broken)
    assert not result
    assert "it raised ZeroDivisionError" in capsys.readouterr().out


def test_a_wrong_shape_is_named():
    result = check("rmsnorm", lambda x, w, eps: torch.zeros(3), quiet=True)
    assert "expected shape" in result.message


def test_an_unknown_exercise_lists_the_known_ones():
    with pytest.raises(ValueError, match="no exercise called 'rms'"):
        check("rms", print)
    assert "rmsnorm" in REGISTRY


# ---------------------------------------------------------------- in the chapters

CHECK_CALL = re.compile(r'check\("(\w+)", (\w+)\)')


def chapter_exercises() -> list[tuple[str, str, str, str, str]]:
    """(chapter, exercise, function name, stub cell, solution cell) of every exercise on
    the chapters' pages: a cell tagged `exercise`, one tagged `solution`, then the
    check."""
    found = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md")):
        cells = [c for c in jupytext.read(path).cells if c.cell_type == "code"]
        for i, cell in enumerate(cells):
            if "exercise" not in cell.metadata.get("tags", []):
                continue
            solution, checker = cells[i + 1], cells[i + 2]
            assert "solution" in solution.metadata.get("tags", []), path.name
            assert "hide-input" in solution.metadata.get("tags", []), path.name
            name, function = CHECK_CALL.search(checker.source).groups()
            found.append((path.name[:2], name, function, cell.source, solution.source))
    return found


ON_THE_PAGE = chapter_exercises()


def _run(*sources: str) -> dict:
    namespace = {"np": np, "torch": torch}
    for source in sources:
        exec(source, namespace)
    return namespace


@pytest.mark.parametrize("chapter, name, function, stub, solution", ON_THE_PAGE)
def test_a_chapters_stub_is_not_done_and_its_solution_passes(
    chapter, name, function, stub, solution
):
    assert REGISTRY[name].chapter == chapter
    fresh = _run(stub)
    assert check(name, fresh[function], quiet=True).status == "not done"
    solved = _run(stub, solution)
    result = check(name, solved[function], quiet=True)
    assert result, result.message
