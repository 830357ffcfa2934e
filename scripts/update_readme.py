"""Rewrite the computed parts of README.md: the presets table from foundry_core.PRESETS,
and the exercise count of each chapter from foundry_core.exercises.

Their numbers are computed, so they are generated rather than edited by hand.

    python scripts/update_readme.py          # rewrite them in place
    python scripts/update_readme.py --check  # exit 1 if the README is stale

tests/test_readme.py runs the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import json  # noqa: E402
from dataclasses import replace  # noqa: E402

from foundry_core import PRESETS  # noqa: E402
from foundry_core.exercises import exercises  # noqa: E402
from foundry_core.pipeline import data_budget, tokens_key  # noqa: E402
from foundry_core.viz import markdown_table  # noqa: E402

START, END = "<!-- presets:start -->", "<!-- presets:end -->"
CHAPTERS_START, CHAPTERS_END = "<!-- chapters:start -->", "<!-- chapters:end -->"
COLUMNS = (
    "preset",
    "hardware",
    "params (M)",
    "precision",
    "batch x seq x accum",
    "tokens (M)",
    "tokens / param",
    "passes (offline)",
    "est. memory (GiB)",
    "est. time",
)


def presets_table() -> str:
    """One row per preset. The data budget's columns measure each course corpus in its
    token file (built on first use; presets with the same corpus and tokenizer share
    it), without the large corpus a GPU preset adds when online: the offline case,
    the same on every machine."""
    corpus_tokens: dict[str, int] = {}
    rows = []
    for preset in PRESETS.values():
        preset = replace(preset, data=replace(preset.data, large_corpus=None))
        key = json.dumps(tokens_key(preset), sort_keys=True)
        if key not in corpus_tokens:
            corpus_tokens[key] = data_budget(preset).corpus_tokens
        budget = data_budget(preset, corpus_tokens[key]).summary()
        budget["passes (offline)"] = budget.pop("passes")
        rows.append({k: {**preset.summary(), **budget}[k] for k in COLUMNS})
    return markdown_table(rows)


def exercise_count(chapter: str) -> str:
    """'5 (1 swap it in)' for a chapter with exercises, '' for one without."""
    ours = [e for e in exercises() if e.chapter == chapter]
    swaps = sum(e.adapt is not None for e in ours)
    if not ours:
        return ""
    return f"{len(ours)}" + (f" ({swaps} swap it in)" if swaps else "")


def chapters_table(old: str) -> str:
    """The chapter table with each row's exercise count recomputed."""
    lines = old.strip().splitlines()
    rows = []
    for line in lines[2:]:
        chapter, topic = (cell.strip() for cell in line.strip("|").split("|")[:2])
        rows.append(
            {"chapter": chapter, "topic": topic, "exercises": exercise_count(chapter)}
        )
    return markdown_table(rows)


def _replace(text: str, start: str, end: str, make) -> str:
    head, rest = text.split(start, 1)
    old, tail = rest.split(end, 1)
    return f"{head}{start}\n{make(old)}\n{end}{tail}"


def with_table(readme: str) -> str:
    readme = _replace(readme, START, END, lambda _: presets_table())
    return _replace(readme, CHAPTERS_START, CHAPTERS_END, chapters_table)


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    updated = with_table(text)
    if "--check" in sys.argv:
        if updated != text:
            print(
                "README.md's presets table is stale: "
                "run python scripts/update_readme.py"
            )
            return 1
        return 0
    path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
