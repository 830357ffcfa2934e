"""Write book/exercises.md, the index of every exercise, from the chapters themselves.

Each chapter introduces an exercise with a bold "**Exercise 3.4 (hard).**" (or "(medium,
swap it in)") and checks it in a later cell with `check("name", function)`; the idea it
practises comes from the checker's registry. The page is generated so that it cannot
drift from the chapters.

    python scripts/exercise_index.py          # rewrite book/exercises.md
    python scripts/exercise_index.py --check  # exit 1 if the page is stale

tests/test_exercises.py runs the check and the consistency tests.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundry_core.exercises import REGISTRY  # noqa: E402
from foundry_core.viz import markdown_table  # noqa: E402

PAGE = ROOT / "book" / "exercises.md"
HEADING = re.compile(r"\*\*Exercise (\d+)\.(\d+) \((\w+)(, swap it in)?\)\.\*\*")
CHECK = re.compile(r'check\("(\w+)", \w+\)')

INTRO = """# Exercises

Every chapter from 01 on ends with **Your turn**: small functions you write yourself,
each checked at once by `foundry_core.exercises.check` against the library's own code,
on typical inputs and edge cases. When your answer is wrong, the check names the first
input that differs and, when your answer matches a common mistake, says which one. The
exercises marked *swap it in* take a function you wrote and put it inside the real model
or trainer: a short training run with your piece must match the run with the library's,
step by step.

This page is generated from the chapters (`python scripts/exercise_index.py`).
"""


@dataclass(frozen=True)
class Entry:
    number: str  # "3.4"
    name: str  # the checker's name
    difficulty: str
    swap: bool
    page: str  # "03_transformer"
    title: str  # the chapter's title


def chapter_entries(path: Path) -> list[Entry]:
    """The exercises of one chapter, in order: each bold heading, paired with the
    first check call after it."""
    text = path.read_text()
    prose = re.sub(r"```\{code-cell\}.*?\n```", "", text, flags=re.DOTALL)
    title = re.search(r"^# (.+)$", prose, re.MULTILINE).group(1).strip()
    entries = []
    for heading in HEADING.finditer(text):
        call = CHECK.search(text, heading.end())
        if call is None:
            raise ValueError(
                f"{path.name}: Exercise {heading[1]}.{heading[2]} has no check"
            )
        entries.append(
            Entry(
                f"{int(heading[1])}.{heading[2]}",
                call[1],
                heading[3],
                bool(heading[4]),
                path.stem,
                title,
            )
        )
    return entries


def all_entries() -> list[Entry]:
    return [
        entry
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
        for entry in chapter_entries(path)
    ]


def page() -> str:
    rows = [
        {
            "exercise": f"[{e.number}](../notebooks/{e.page}.md#your-turn)",
            "chapter": e.title,
            "difficulty": e.difficulty + (", swap it in" if e.swap else ""),
            "what you practise": REGISTRY[e.name].idea,
        }
        for e in all_entries()
    ]
    return f"{INTRO}\n{markdown_table(rows)}\n"


def main() -> int:
    text = page()
    if "--check" in sys.argv:
        if PAGE.read_text() != text:
            print("book/exercises.md is stale: run python scripts/exercise_index.py")
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
