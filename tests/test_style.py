"""The code is part of the book: it must lint clean and fit the page column.

`ruff` (pinned in requirements.txt, configured in pyproject.toml) lints and formats the
package, the tests, the benchmarks, the scripts and the chapters' code cells at 88
columns, the width of a code block in the book (tests/test_site.py checks the pages).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    """Run the ruff of this environment (the pinned one), not whatever is on PATH."""
    exe = Path(sys.executable).with_name("ruff")
    if not exe.exists():
        exe = shutil.which("ruff")
        if exe is None:
            pytest.fail("ruff is not installed: pip install -r requirements.txt")
    return subprocess.run(
        [str(exe), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_lint_is_clean():
    result = ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, (
        "ruff check found problems (fix them, or `ruff check --fix .`):\n"
        + result.stdout
        + result.stderr
    )


def test_ruff_format_is_applied():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, (
        "some files are not formatted: run `ruff format .` (for a chapter, then "
        "`python scripts/sync_notebooks.py` to carry it to the .md)\n" + result.stdout
    )


PACKAGE = ROOT / "foundry_core"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_small():
    """A reader should be able to hold a module, and a function, in their head."""
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(
                        f"{name}:{node.lineno} {node.name}(): {length} lines"
                    )
    assert not too_big, (
        f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per "
        "function; split along a seam:\n" + "\n".join(too_big)
    )
