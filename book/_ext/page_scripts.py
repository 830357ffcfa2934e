"""The JavaScript of every page: served by the site itself when it can be, error-free.

1. Offline. The pages load MathJax (Sphinx's `mathjax_path`), require.js and the Jupyter
   widget manager (myst-nb's `nb_ipywidgets_js`) from CDNs, so a site opened without
   network shows raw TeX and empty widgets, and a test in a sandbox can check neither.
   `python scripts/vendor_js.py` fetches them into the git-ignored `_vendor/`; when it
   is complete, this extension copies them into the site's `_static/` and points the
   pages there. Without `_vendor/` the CDNs stay.
2. Widgets. Before the widget manager, each widget page gets a short script that tells
   require.js where the manager lives, so that it finds its icon fonts (else it looks
   beside the page: six 404s), and lets the widget labels typeset with MathJax 3
   (ipywidgets 8 calls MathJax 2's `MathJax.Hub.Queue`: an uncaught TypeError on every
   page that has both math and a widget).
3. Duplicates. Sphinx 7, which Jupyter Book 1 requires, writes an inline script twice
   when an extension adds it after the builder started (fixed in Sphinx 8.2,
   sphinx-doc/sphinx#13402): sphinx-thebe's `const THEBE_JS_URL` then throws "has
   already been declared" on every page.

Settings a user chose in `_config.yml` win: only values still at their defaults are
replaced. tests/test_site.py checks the result in Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.ext.mathjax import MATHJAX_URL
from sphinx.util import logging

logger = logging.getLogger(__name__)

VENDOR = "_vendor"

# Runs before require.js and the widget manager; %s is the widget manager's folder (a
# URL, or "{root}..." from the site root). require.js gives each module the URL it
# would load it from, and each of the bundle's modules finds its icon fonts beside that
# URL: by default beside the page, where there are none. A backslash at the end of a
# line joins the next line to it, so the page gets the long lines unbroken.
_WIDGET_SETUP = """(() => {
  const root = document.documentElement.dataset.content_root || "";
  const dist = new URL(%s.replace("{root}", root), document.baseURI).href;
  const paths = {"@jupyter-widgets/html-manager/dist": dist};  \
// each bundled module, placed in dist/
  for (const name of ["base", "controls", "html-manager"]) \
paths[`@jupyter-widgets/${name}`] = `${dist}/${name}`;
  if (typeof window.require === "function") window.require.config({paths});
  else window.require = {paths};
  window.addEventListener("load", () => {
    const mathjax = window.MathJax;
    if (mathjax && mathjax.typesetPromise && !mathjax.Hub) {
      mathjax.Hub = {Queue: (job) => mathjax.typesetPromise([job[2]]).catch(() => {})};
    }
  });
})();"""


def vendored_entries(vendor: Path) -> dict[str, str] | None:
    """The entry script of each vendored package (relative to _static/), or None.

    None means nothing is vendored. A `_vendor/` whose manifest names a file that is
    missing is broken, not absent: that is a warning (an error under `-W`), so a
    half-fetched folder never passes silently for the CDN.
    """
    manifest = vendor / "manifest.json"
    if not manifest.is_file():
        return None
    entries = {
        folder: item["entry"]
        for folder, item in json.loads(manifest.read_text()).items()
    }
    missing = [
        entry for entry in entries.values() if not (vendor / "static" / entry).is_file()
    ]
    if missing:
        logger.warning(
            "%s is incomplete (missing %s): run python scripts/vendor_js.py again",
            vendor,
            ", ".join(missing),
        )
        return None
    return entries


def _myst_nb_default_widgets_js() -> dict | None:
    """myst-nb's default `nb_ipywidgets_js`, to tell whether the user changed it."""
    try:
        from myst_nb.core.config import ipywidgets_js_factory
    except ImportError:  # a myst-nb that moved it: leave the setting alone
        return None
    return ipywidgets_js_factory()


def widget_scripts(scripts: dict[str, dict], assets: str) -> dict[str, dict]:
    """`scripts` (require.js, then the widget manager) with the setup script in front.

    myst-nb adds each entry with `app.add_js_file(key, **attributes)`; the key ''
    makes it inline.
    """
    return {"": {"body": _WIDGET_SETUP % json.dumps(assets)}, **scripts}


def use_page_scripts(app: Sphinx, config: Config) -> None:
    """On `config-inited`: use vendored copies if any; add the widget setup script."""
    entries = vendored_entries(Path(app.srcdir) / VENDOR)
    if entries is not None:
        config.html_static_path = [
            *config.html_static_path,
            str(Path(app.srcdir) / VENDOR / "static"),
        ]
        if config.mathjax_path == MATHJAX_URL:
            config.mathjax_path = entries["mathjax"]
        logger.info(
            "page_scripts: MathJax and the widget manager come from %s/", VENDOR
        )
    else:
        logger.info(
            "page_scripts: no complete %s/, "
            "MathJax and the widget manager come from CDNs",
            VENDOR,
        )

    default = _myst_nb_default_widgets_js()
    if (
        default is None
        or "nb_ipywidgets_js" not in config
        or config.nb_ipywidgets_js != default
    ):
        return
    if entries is not None:
        # require.js first: the widget manager's bundle registers itself as AMD modules.
        scripts = {entries["requirejs"]: {}, entries["jupyter-widgets"]: {}}
        assets = "{root}_static/" + entries["jupyter-widgets"].rpartition("/")[0]
    else:
        scripts = default
        assets = next(
            url for url in default if url.endswith("embed-amd.js")
        ).rpartition("/")[0]
    config.nb_ipywidgets_js = widget_scripts(scripts, assets)


def _script_key(script: Any) -> tuple:
    """What makes two script entries the same <script> tag.

    None and '' both mean 'inline'.
    """
    if isinstance(script, str):
        return (script, 500, ())
    attributes = tuple(sorted(getattr(script, "attributes", {}).items()))
    return (
        getattr(script, "filename", None) or "",
        getattr(script, "priority", 500),
        attributes,
    )


def drop_duplicate_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """On `html-page-context`, after the other extensions added per-page scripts."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # the builder restores its own list before the next page


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_page_scripts, priority=800)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
