"""Rewrite the presets table in README.md from foundry_core.PRESETS.

The table's numbers are computed, so it is generated rather than edited by hand.

    python scripts/update_readme.py          # rewrite the table in place
    python scripts/update_readme.py --check  # exit 1 if the README's table is stale

tests/test_readme.py runs the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundry_core import PRESETS  # noqa: E402
from foundry_core.viz import markdown_table  # noqa: E402

START, END = "<!-- presets:start -->", "<!-- presets:end -->"
COLUMNS = (
    "preset",
    "hardware",
    "params (M)",
    "precision",
    "batch x seq x accum",
    "tokens (M)",
    "est. memory (GiB)",
    "est. time",
)


def presets_table() -> str:
    rows = [{k: p.summary()[k] for k in COLUMNS} for p in PRESETS.values()]
    return markdown_table(rows)


def with_table(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{presets_table()}\n{END}{tail}"


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
