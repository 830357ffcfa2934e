"""Keep each notebooks/NN_topic.md (a chapter) or A1_topic.md (an appendix), the
source we edit, and its .ipynb twin (for Colab and nbval) in step.

    python scripts/sync_notebooks.py          # jupytext --sync, then strip outputs
    python scripts/sync_notebooks.py --check  # list what is out of step; exit 1 if any

The test suite runs the same check (tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def chapter_sources() -> list[Path]:
    """Chapters (NN_topic.md), then appendices (A1_topic.md, ...), in reading order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md")) + sorted(
        NOTEBOOKS.glob("[A-Z][0-9]_*.md")
    )


def _cell_key(cell) -> tuple[str, str, tuple[str, ...]]:
    return (
        cell.cell_type,
        cell.source.strip(),
        tuple(cell.get("metadata", {}).get("tags", [])),
    )


def problems(md: Path) -> list[str]:
    """Everything wrong with the pairing of `md` and its .ipynb; empty when in step."""
    ipynb = md.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{ipynb.name} is missing: run python scripts/sync_notebooks.py"]
    found = []
    source, twin = jupytext.read(md), nbformat.read(ipynb, as_version=4)
    if [_cell_key(c) for c in source.cells] != [_cell_key(c) for c in twin.cells]:
        found.append(
            f"{ipynb.name} differs from {md.name}: run python scripts/sync_notebooks.py"
        )
    for i, cell in enumerate(twin.cells):
        if cell.cell_type == "code" and (
            cell.outputs or cell.execution_count is not None
        ):
            found.append(
                f"{ipynb.name} cell {i} holds outputs: "
                "run python scripts/sync_notebooks.py"
            )
            break
    return found


def strip_outputs(ipynb: Path) -> None:
    nb = nbformat.read(ipynb, as_version=4)
    dirty = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (
            cell.outputs or cell.execution_count is not None
        ):
            cell.outputs, cell.execution_count, dirty = [], None, True
    if dirty:
        nbformat.write(nb, ipynb)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only report, change nothing"
    )
    args = parser.parse_args()
    sources = chapter_sources()
    if not args.check:
        subprocess.run(
            [sys.executable, "-m", "jupytext", "--sync", *map(str, sources)], check=True
        )
        for md in sources:
            strip_outputs(md.with_suffix(".ipynb"))
    found = [p for md in sources for p in problems(md)]
    print("\n".join(found) or f"{len(sources)} notebooks in sync")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
