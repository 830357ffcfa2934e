"""The book builds with warnings as errors, offline, and links every chapter.

Execution is switched off here: nbval has already executed every chapter in this test run, and the
README's build command executes them all for real.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _offline_prefix() -> list[str]:
    """`unshare -n` runs the build in a network namespace with no network, where the OS allows it."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [*_offline_prefix(), str(jupyter_book), "build", str(ROOT), "--config", str(out / "_config.yml"),
           "--path-output", str(out), "-W", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"


def test_every_toc_entry_has_a_page(html):
    for name in toc_files():
        assert (html / f"{name}.html").exists(), f"no page for {name}"


def test_index_leads_to_every_chapter(html):
    index = (html / "index.html").read_text()
    target = re.search(r'url=([^"]+)"', index).group(1)
    root_page = html / target
    assert root_page == html / f"{toc_files()[0]}.html"
    links = set(re.findall(r'href="([^"#]+)', root_page.read_text()))
    resolved = {(root_page.parent / link).resolve() for link in links}
    for name in toc_files()[1:]:
        assert (html / f"{name}.html").resolve() in resolved, f"the front page does not link {name}"


def test_launch_buttons_open_the_ipynb(html):
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    slug = repository.removeprefix("https://github.com/")
    for name in toc_files():
        if not name.startswith("notebooks/"):
            continue
        page = (html / f"{name}.html").read_text()
        assert f"colab.research.google.com/github/{slug}/blob/main/{name}.ipynb" in page
        assert f"mybinder.org/v2/gh/{slug}/main?urlpath=lab/tree/{name}.ipynb" in page
