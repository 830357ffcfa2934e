"""The Chinese track: with FOUNDRY_CORPUS=zh, chapters 1-6 run end to end on the idiom
dictionary (the tokenizer, pretraining and SFT included), every hidden check passing.

nbval compares the English chapters' outputs; here the chapters only have to run,
since every number they print changes with the corpus.
"""

import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from foundry_core.presets import cell_timeout, get_preset

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = [
    "01_data",
    "02_tokenizer",
    "03_transformer",
    "04_pretraining",
    "05_generation",
    "06_sft",
]


def run(chapter: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=cell_timeout(get_preset("ci")),
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    return notebook


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_on_the_chinese_track(chapter, monkeypatch):
    monkeypatch.setenv("FOUNDRY_CORPUS", "zh")  # the kernel inherits the environment
    try:
        notebook = run(chapter)
    except DeadKernelError:
        # the rare lost kernel message that foundry_core.watchdog turns from a hang
        # into a dead kernel (seen in chapter 5's widget cell, here and in the book
        # build, which retries it too): a transport failure, so the chapter runs again
        warnings.warn(f"{chapter}: the kernel died (a lost message?); running again")
        notebook = run(chapter)
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    # every Chinese character in a figure has a glyph (viz.fonts)
    assert "missing from font" not in printed
    if chapter == "02_tokenizer":
        assert "preset ci: 4096 tokens" in printed
