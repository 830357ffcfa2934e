"""A stuck chapter fails within its configured time, naming the notebook and the cell.

Three paths: a cell that runs past the per-cell limit under nbval (what `pytest` runs)
and under the book build (myst-nb), and a kernel left waiting for a message that never
comes (foundry_core/watchdog.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from foundry_core.presets import CELL_TIMEOUT_FLOOR, PRESETS, cell_timeout, get_preset
from foundry_core.watchdog import watchdog_from_environment

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = "import time\ntime.sleep(120)  # a cell that hangs"


def notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_cell_timeout_fits_each_preset():
    assert cell_timeout(get_preset("ci")) == CELL_TIMEOUT_FLOOR  # seconds, not an hour
    cpu = PRESETS["cpu"]
    # room for the pretraining cell on a slow CPU
    assert cell_timeout(cpu) >= 3 * cpu.estimate_seconds()
    assert cell_timeout(PRESETS["a100"]) > cell_timeout(cpu)


def test_nbval_uses_the_ci_cell_timeout(request):
    assert request.config.option.nbval_cell_timeout == cell_timeout(get_preset("ci"))


def test_nbval_fails_a_hanging_cell_in_time(tmp_path):
    nbformat.write(notebook("x = 1", SLEEPER), tmp_path / "stuck.ipynb")
    # keep the project's options out of this run
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-cell-timeout=3",
            "-p",
            "no:cacheprovider",
            "stuck.ipynb",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0, result.stdout[-2000:]
    assert (
        "stuck.ipynb::Cell 1" in result.stdout
        and "Timeout of 3 seconds exceeded" in result.stdout
    )
    assert elapsed < 60, elapsed


def test_book_build_fails_a_hanging_cell_in_time(tmp_path):
    """The extension's limit ends the build, naming the notebook.

    The limit here is FOUNDRY_CELL_TIMEOUT=3.
    """
    (tmp_path / "stuck.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n"
        "# Stuck\n\n```{code-cell} ipython3\n" + SLEEPER + "\n```\n"
    )
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: stuck\n")
    (tmp_path / "_config.yml").write_text(
        "title: t\nexecute:\n  execute_notebooks: cache\n  timeout: -1\n"
        "sphinx:\n  local_extensions:\n"
        f"    cell_timeout: {ROOT / 'book' / '_ext'}\n"
        "  config:\n    nb_execution_raise_on_error: true\n"
    )
    env = {**os.environ, "FOUNDRY_CELL_TIMEOUT": "3"}
    start = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "stuck.md" in output and "timed out" in output, output[-3000:]
    assert "time.sleep(120)" in output  # the cell, quoted in the error
    assert elapsed < 120, elapsed


def test_idle_kernel_exits_so_a_lost_reply_fails_fast():
    """A client waits for a reply the kernel never got: the kernel's watchdog ends the
    wait in seconds."""
    nb = notebook("import foundry_core")
    client = NotebookClient(nb, timeout=600, kernel_name="python3")
    env = {**os.environ, "FOUNDRY_IDLE_LIMIT": "3"}
    with client.setup_kernel(env=env):
        client.execute_cell(nb.cells[0], 0)
        start = time.monotonic()
        with pytest.raises(DeadKernelError):
            client.wait_for_reply("a-message-the-kernel-never-received", nb.cells[0])
        assert time.monotonic() - start < 30


def test_watchdog_settings_are_checked():
    assert watchdog_from_environment({}) is False
    # not in a kernel: nothing to watch
    assert watchdog_from_environment({"FOUNDRY_IDLE_LIMIT": "5"}) is False
    for bad in ("soon", "0", "-3"):
        with pytest.raises(ValueError, match="FOUNDRY_IDLE_LIMIT"):
            watchdog_from_environment({"FOUNDRY_IDLE_LIMIT": bad})
