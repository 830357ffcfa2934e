"""Each chapter's MyST source and its .ipynb twin agree and carry no outputs.

Both start with the bootstrap.
"""

import importlib.util
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "sync_notebooks", ROOT / "scripts" / "sync_notebooks.py"
)
sync_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_notebooks)

CHAPTERS = sync_notebooks.chapter_sources()
REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks/NN_topic.md found"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_twin_is_in_sync_and_output_free(md):
    assert sync_notebooks.problems(md) == []


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_metadata_and_bootstrap(md):
    nb = jupytext.read(md)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,md:myst"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "code" and "remove-cell" in first.metadata.get("tags", [])
    assert "google.colab" in first.source and "import foundry_core" in first.source
    assert f'repo = "{REPOSITORY}"' in first.source, (
        "the bootstrap clones another repository"
    )
    assert first.source == jupytext.read(CHAPTERS[0]).cells[0].source, (
        "bootstraps must be identical"
    )
    titles = [
        c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("# ")
    ]
    assert len(titles) == 1, "one title per chapter"


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    for md in CHAPTERS:
        assert f"file: notebooks/{md.stem}" in toc, (
            f"{md.name} is missing from _toc.yml"
        )
