"""The pages' JavaScript: the vendoring script's pins and extraction.

Also the switches of the Sphinx extension. These run without npm and without network:
the end-to-end path (fetch, build, render) is checked by tests/test_site.py on the built
book.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

from myst_nb.core.config import ipywidgets_js_factory
from sphinx.ext.mathjax import MATHJAX_URL

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the class is made
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


vendor_js = _load("vendor_js", ROOT / "scripts" / "vendor_js.py")
page_scripts = _load("page_scripts", ROOT / "book" / "_ext" / "page_scripts.py")
PINS = {package.name: package.version for package in vendor_js.PACKAGES}


def test_pins_are_the_versions_sphinx_and_myst_nb_load():
    """A Sphinx or myst-nb upgrade that moves its CDN versions must move the pins."""
    assert f"mathjax@{PINS['mathjax'].split('.')[0]}/" in MATHJAX_URL
    urls = " ".join(ipywidgets_js_factory())
    assert f"require.js/{PINS['requirejs']}/" in urls
    assert f"html-manager@{PINS['@jupyter-widgets/html-manager']}/" in urls


def test_only_the_needed_files_are_kept_and_flattened():
    mathjax = next(p for p in vendor_js.PACKAGES if p.name == "mathjax")
    assert vendor_js._wanted(PurePosixPath("es5/tex-mml-chtml.js"), mathjax.keep)
    assert vendor_js._wanted(
        PurePosixPath("es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"),
        mathjax.keep,
    )
    assert not vendor_js._wanted(PurePosixPath("es5/tex-svg-full.js"), mathjax.keep)
    assert not vendor_js._wanted(PurePosixPath("ts/core/MathItem.ts"), mathjax.keep)
    assert vendor_js._target(
        PurePosixPath("es5/input/tex/extensions/ams.js")
    ) == PurePosixPath("input/tex/extensions/ams.js")
    widgets = next(p for p in vendor_js.PACKAGES if p.folder == "jupyter-widgets")
    assert vendor_js._wanted(
        PurePosixPath("dist/1551f4f60c37af51121f.woff2"), widgets.keep
    )
    assert not vendor_js._wanted(PurePosixPath("dist/embed-amd.js.map"), widgets.keep)


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_extract_writes_the_entry_and_skips_the_rest(tmp_path):
    package = next(p for p in vendor_js.PACKAGES if p.name == "requirejs")
    tarball = _tarball(
        tmp_path / "r.tgz",
        {
            "package/require.js": b"define=1",
            "package/bin/r.js": b"",
            "package/../evil.js": b"",
        },
    )
    assert vendor_js.extract(tarball, package, tmp_path / "static") == 1
    assert (
        tmp_path / "static" / "requirejs" / "require.js"
    ).read_bytes() == b"define=1"
    assert not (tmp_path / "static" / "requirejs" / "bin").exists()


def _fake_vendor(root: Path, missing: str | None = None) -> Path:
    vendor = root / "_vendor"
    for item in vendor_js.manifest().values():
        if item["entry"] != missing:
            (vendor / "static" / item["entry"]).parent.mkdir(
                parents=True, exist_ok=True
            )
            (vendor / "static" / item["entry"]).write_text("// stand-in")
    (vendor / "manifest.json").write_text(json.dumps(vendor_js.manifest()))
    return vendor


class FakeConfig(SimpleNamespace):
    """The three settings the extension reads, at Sphinx's and myst-nb's defaults."""

    def __init__(self, **overrides):
        defaults = {
            "html_static_path": [],
            "mathjax_path": MATHJAX_URL,
            "nb_ipywidgets_js": ipywidgets_js_factory(),
        }
        super().__init__(**{**defaults, **overrides})

    def __contains__(self, name: str) -> bool:
        return hasattr(self, name)


def _run(root: Path, config: FakeConfig) -> FakeConfig:
    page_scripts.use_page_scripts(SimpleNamespace(srcdir=str(root)), config)
    return config


def test_without_vendor_the_cdns_stay_and_the_widgets_get_their_setup(tmp_path):
    config = _run(tmp_path, FakeConfig())
    assert config.html_static_path == [] and config.mathjax_path == MATHJAX_URL
    setup, *rest = config.nb_ipywidgets_js.items()
    assert (
        setup[0] == ""
        and '"@jupyter-widgets/html-manager/dist": dist' in setup[1]["body"]
    )
    assert (
        '"https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist"'
        in setup[1]["body"]
    )
    assert dict(rest) == ipywidgets_js_factory()


def test_with_vendor_the_pages_load_the_copies(tmp_path):
    vendor = _fake_vendor(tmp_path)
    assert vendor_js.check(vendor) == []
    config = _run(tmp_path, FakeConfig())
    assert config.html_static_path == [str(vendor / "static")]
    assert config.mathjax_path == "mathjax/tex-mml-chtml.js"
    assert list(config.nb_ipywidgets_js) == [
        "",
        "requirejs/require.js",
        "jupyter-widgets/embed-amd.js",
    ]
    assert '"{root}_static/jupyter-widgets"' in config.nb_ipywidgets_js[""]["body"]


def test_settings_the_user_chose_are_kept(tmp_path):
    _fake_vendor(tmp_path)
    mine = {"https://example.org/widgets.js": {}}
    config = _run(
        tmp_path,
        FakeConfig(
            mathjax_path="https://example.org/mathjax.js", nb_ipywidgets_js=mine
        ),
    )
    assert config.mathjax_path == "https://example.org/mathjax.js"
    assert config.nb_ipywidgets_js == mine


def test_an_incomplete_vendor_folder_is_not_used(tmp_path):
    vendor = _fake_vendor(tmp_path, missing="mathjax/tex-mml-chtml.js")
    assert vendor_js.check(vendor) == ["mathjax/tex-mml-chtml.js is missing"]
    config = _run(tmp_path, FakeConfig())
    assert config.html_static_path == [] and config.mathjax_path == MATHJAX_URL


def test_duplicate_scripts_are_dropped_once_per_page():
    from sphinx.builders.html._assets import _JavaScript

    thebe = "const THEBE_JS_URL = 1"
    scripts = [
        _JavaScript(None, body=thebe),
        _JavaScript("a.js"),
        _JavaScript("", body=thebe),
        _JavaScript("a.js"),
    ]
    context = {"script_files": scripts}
    page_scripts.drop_duplicate_scripts(None, "page", "page.html", context, None)
    assert [(s.filename, s.attributes.get("body")) for s in scripts] == [
        (None, thebe),
        ("a.js", None),
    ]
