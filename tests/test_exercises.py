"""The exercise checkers: the library's own answer passes, every usual mistake fails
with its own hint, and a stub is "not done yet", never a traceback."""

import importlib.util
import re
import sys
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from foundry_core.exercises import check, exercises
from foundry_core.exercises.check import REGISTRY

EXERCISES = exercises()
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
_spec = importlib.util.spec_from_file_location(
    "exercise_index", ROOT / "scripts" / "exercise_index.py"
)
exercise_index = importlib.util.module_from_spec(_spec)
sys.modules["exercise_index"] = exercise_index  # its dataclass looks itself up there
_spec.loader.exec_module(exercise_index)


def test_the_course_has_exercises_in_several_chapters():
    assert len(EXERCISES) >= 25
    per_chapter = {f"{n:02d}": 0 for n in range(1, 12)}
    for exercise in EXERCISES:
        per_chapter[exercise.chapter] += 1
    assert min(per_chapter.values()) >= 2, per_chapter
    assert all(e.mistakes for e in EXERCISES), "every checker knows a usual mistake"
    swaps = [e.name for e in EXERCISES if e.adapt is not None]
    assert len(swaps) >= 3 and len({REGISTRY[n].chapter for n in swaps}) >= 3, swaps


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


def test_every_exercise_is_on_its_chapters_page_once_as_registered():
    entries = exercise_index.all_entries()
    names = [e.name for e in entries]
    assert sorted(names) == sorted(REGISTRY), set(names) ^ set(REGISTRY)
    for entry in entries:
        exercise = REGISTRY[entry.name]
        assert entry.page[:2] == exercise.chapter, entry
        assert entry.number.split(".")[0] == str(int(exercise.chapter)), entry
        assert entry.difficulty == exercise.difficulty, entry
        assert entry.swap == (exercise.adapt is not None), entry
    for chapter in {e.page for e in entries}:
        numbers = [int(e.number.split(".")[1]) for e in entries if e.page == chapter]
        assert numbers == list(range(1, len(numbers) + 1)), (chapter, numbers)


def test_the_exercise_index_page_is_current():
    page = (ROOT / "book" / "exercises.md").read_text()
    assert page == exercise_index.page(), "run python scripts/exercise_index.py"
    assert "book/exercises" in (ROOT / "_toc.yml").read_text()


CHECK_CALL = re.compile(r'check\("(\w+)", (\w+)\)')


def chapter_exercises() -> list[tuple[str, str, str, str, str]]:
    """(chapter, exercise, function name, stub cell, solution cell) of every exercise on
    the chapters' pages: a cell tagged `exercise`, one tagged `solution`, then the
    check. A "swap it in" check later in the chapter that uses the same function counts
    as an exercise with that stub and solution."""
    found = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md")):
        cells = [c for c in jupytext.read(path).cells if c.cell_type == "code"]
        calls = [CHECK_CALL.search(c.source) for c in cells]
        for i, cell in enumerate(cells):
            if "exercise" not in cell.metadata.get("tags", []):
                continue
            solution = cells[i + 1]
            assert "solution" in solution.metadata.get("tags", []), path.name
            assert "hide-input" in solution.metadata.get("tags", []), path.name
            function = calls[i + 2][2]
            for call in calls[i + 2 :]:
                if (
                    call
                    and call[2] == function
                    and (call is calls[i + 2] or REGISTRY[call[1]].adapt is not None)
                ):
                    found.append(
                        (path.name[:2], call[1], function, cell.source, solution.source)
                    )
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


# ---------------------------------------------------------------- swap it in


def test_the_swap_references_are_the_library_runs():
    """A swap exercise's reference piece, plugged in, gives the library's own run:
    the fused kernel the model calls, the Trainer's default schedule."""
    from foundry_core.exercises import swap

    for n_kv_heads in (2, 1):
        assert swap.attention_run(swap.fused_attention, n_kv_heads) == (
            swap.attention_run(None, n_kv_heads)
        )
    # attention written out (the chapter's solution) is the fused kernel up to
    # rounding, far below the check's tolerance, as chapter 3 says
    from foundry_core.exercises.transformer import causal_attention_reference

    for n_kv_heads in (2, 1):
        fused = swap.attention_run(None, n_kv_heads)
        written = swap.attention_run(causal_attention_reference, n_kv_heads)
        gap = max(abs(a - b) for a, b in zip(fused, written))
        assert gap < REGISTRY["swap_attention"].atol / 10, gap
    # and without the causal mask the runs part at the very first step
    no_mask = REGISTRY["causal_attention"].mistakes[0].wrong
    assert "step 1:" in check("swap_attention", no_mask, quiet=True).message
    assert swap.schedule_run(swap.lr_at) == swap._losses(
        swap._fresh_model(swap.TINY), swap.RUN, swap._token_stream()
    )


def test_a_swap_run_really_trains():
    """The runs the swap checks compare are training: the loss falls."""
    from foundry_core.exercises import swap

    attention = swap.attention_run(None, 2)
    assert attention[-1] < attention[0] - 0.5, attention
    dpo = swap.dpo_run(swap.dpo_reference, 0.5)
    assert abs(dpo[0] - np.log(2)) < 1e-6 and dpo[-1] < dpo[0] - 0.1, dpo


def test_a_piece_that_breaks_gradients_fails_the_swap():
    def detached(pc, pr, rc, rr, beta):
        chosen, rejected = beta * (pc - rc), beta * (pr - rr)
        return torch.tensor(-F.logsigmoid(chosen - rejected).mean().item())

    result = check("swap_dpo_loss", detached, quiet=True)
    assert result.status == "failed", result.message
    assert "does not require grad" in result.message
    assert "hint: the loss must stay a tensor" in result.message


def test_every_stub_is_not_done_yet_in_a_fresh_kernel():
    """What a reader of the notebook sees: each chapter's stub, run in a new Jupyter
    kernel and checked, prints the "not done yet" line, never a traceback."""
    import nbclient
    import nbformat

    cells = [nbformat.v4.new_code_cell("import math\nimport numpy as np\nimport torch")]
    cells.append(
        nbformat.v4.new_code_cell("from foundry_core.exercises import ADAMW, check")
    )
    for _, name, function, stub, _ in ON_THE_PAGE:
        cells.append(nbformat.v4.new_code_cell(stub))
        cells.append(nbformat.v4.new_code_cell(f'check("{name}", {function})'))
    notebook = nbformat.v4.new_notebook(cells=cells)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    printed = [
        "".join(out.get("text", "") for out in cell.outputs)
        for cell in notebook.cells[3::2]
    ]
    assert len(printed) == len(ON_THE_PAGE)
    # the message once: the Result the cell ends with does not show it again (a busy
    # kernel may send the printed text in several stream chunks)
    for cell in notebook.cells[3::2]:
        assert all(out.output_type == "stream" for out in cell.outputs), cell.outputs
    for (_, name, *_), text in zip(ON_THE_PAGE, printed):
        assert text.startswith(f"… {name}: not done yet."), (name, text)
