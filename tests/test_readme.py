"""The README's commands are those CI runs, and its presets table matches the code."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "update_readme", ROOT / "scripts" / "update_readme.py"
)
update_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_readme)

README = (ROOT / "README.md").read_text()


def test_presets_table_is_current():
    assert update_readme.with_table(README) == README, (
        "run python scripts/update_readme.py"
    )


def test_quick_start_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements.txt && jupyter-book build ." in README
    assert "\npytest\n" in README and "\npytest\n" in ci
    assert "-r requirements.txt" in ci
