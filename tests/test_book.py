"""The book builds offline, warnings as errors, links every chapter, offers notebooks.

The build itself is the session fixture `book_html` (tests/conftest.py): every chapter
executed, as in a release, with the tiny `ci` preset.
"""

import re
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


EDITIONS = ("", "zh_CN/")  # English at the root, Chinese in zh_CN/


def test_every_toc_entry_has_a_page(book_html):
    for edition in EDITIONS:
        for name in toc_files():
            page = book_html / f"{edition}{name}.html"
            assert page.exists(), f"no page for {edition}{name}"


def test_index_leads_to_every_chapter(book_html):
    index = (book_html / "index.html").read_text()
    target = re.search(r'url=([^"]+)"', index).group(1)
    root_page = book_html / target
    assert root_page == book_html / f"{toc_files()[0]}.html"
    links = set(re.findall(r'href="([^"#]+)', root_page.read_text()))
    resolved = {(root_page.parent / link).resolve() for link in links}
    for name in toc_files()[1:]:
        assert (book_html / f"{name}.html").resolve() in resolved, (
            f"the front page does not link {name}"
        )


def test_launch_buttons_open_the_ipynb(book_html):
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    slug = repository.removeprefix("https://github.com/")
    for name in toc_files():
        if not name.startswith("notebooks/"):
            continue
        for edition in EDITIONS:  # the Chinese pages open the same notebooks
            page = (book_html / f"{edition}{name}.html").read_text()
            colab = f"colab.research.google.com/github/{slug}/blob/main/{name}.ipynb"
            binder = f"mybinder.org/v2/gh/{slug}/main?urlpath=lab/tree/{name}.ipynb"
            assert colab in page and binder in page, f"{edition}{name}"


def _download_links(page: str) -> dict[str, str]:
    """The theme's download menu of a page: button label -> href."""
    found = re.findall(
        r'<a href="([^"]+)"[^>]*?class="btn btn-sm btn-(download-[a-z-]+-button)', page
    )
    return {label: href for href, label in found}


def test_download_ipynb_carries_the_outputs(book_html):
    """Each chapter's "Download .ipynb" is the executed notebook, with all it carries.

    That is its outputs, its widget state and its hidden cells. For a MyST .md chapter,
    sphinx-book-theme copies the notebook myst-nb executed (jupyter_execute/) into
    _sources/ and offers it beside the .md source, so a reader gets what the page shows.
    The Chinese pages offer the same run, read from the English build's cache.
    """
    for name in [f"{e}{n}" for e in EDITIONS for n in toc_files()]:
        if not name.removeprefix("zh_CN/").startswith("notebooks/"):
            continue
        page_path = book_html / f"{name}.html"
        page = page_path.read_text()
        links = _download_links(page)
        assert "download-notebook-button" in links, (
            f"{name}: no .ipynb download button in {links}"
        )
        notebook = nbformat.read(
            page_path.parent / links["download-notebook-button"], as_version=4
        )
        outputs = [
            o
            for cell in notebook.cells
            if cell.cell_type == "code"
            for o in cell.outputs
        ]
        assert outputs, f"the downloadable {name}.ipynb has no outputs"
        assert "import foundry_core" in notebook.cells[0].source, (
            f"{name}.ipynb lost its bootstrap cell"
        )
        if 'type="application/vnd.jupyter.widget-state+json"' in page:
            assert notebook.metadata.get("widgets"), (
                f"the downloadable {name}.ipynb lost its widget state"
            )


def test_chapters_that_plot_carry_their_figures(book_html):
    """A chapter whose code draws with matplotlib shows the figures on its page.

    An Agg backend leaking into the build's kernels would silently drop them all.
    """
    for name in toc_files():
        source = ROOT / f"{name}.md"
        if name.startswith("notebooks/") and re.search(
            r"plt\.|plot_\w+\(", source.read_text()
        ):
            page = (book_html / f"{name}.html").read_text()
            assert re.search(r'<img[^>]+src="[^"]*_images/', page), (
                f"{name}: no figure on the page"
            )
