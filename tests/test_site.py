"""Every page of the built site works in a real browser.

The browser is headless Chromium, the site is served from localhost, and the run is
offline. A static check of the HTML cannot see what a reader sees: a script that throws,
a figure that does not load, formulas left as raw TeX, widgets that stay empty because
their JavaScript never came. So each page is opened in Chromium and checked for: no
JavaScript errors, every image loaded, every formula typeset by MathJax, every widget
rendered with its saved state, the Colab button opening the chapter's .ipynb. Requests
that leave localhost are blocked: with `_vendor/` (scripts/vendor_js.py) the site must
need none; without it the pages load MathJax and the widget manager from CDNs, so the
math and widget checks skip, saying so. A full-page screenshot of each page lands in
<build>/html/_screenshots/.

Playwright drives the system's Chromium (Debian's `chromium`, or
FOUNDRY_CHROMIUM=/path/to/chrome); it never downloads a browser of its own. Without a
Chromium the tests skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = (
    "chromium",
    "google-chrome",
    "google-chrome-stable",
    "chromium-browser",
)
# Playwright adds --headless itself; the rest keep a headless run quiet and
# self-contained.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# built by Sphinx beside the table of contents
SPECIAL_PAGES = ["index", "genindex", "search"]
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MATH_IN_SOURCE = re.compile(r"\$\$|(?<![\\$\w])\$[^$\s][^$\n]*?\$|\{math\}|\\begin\{")


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [
        chapter["file"] for part in toc.get("parts", []) for chapter in part["chapters"]
    ]


PAGES = toc_files() + SPECIAL_PAGES
# English at the root, the Chinese edition in zh_CN/ (book/_ext/translations.py)
EDITIONS = {"en": "", "zh_CN": "zh_CN/"}


def find_chromium() -> str | None:
    """The Chromium to drive.

    FOUNDRY_CHROMIUM if set, else the first Chromium or Chrome on the PATH.
    """
    chosen = os.environ.get("FOUNDRY_CHROMIUM")
    if chosen:
        return chosen
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def source_has_math(name: str) -> bool:
    """Whether a page's Markdown source, outside code blocks, writes math.

    That is $...$, $$...$$ or {math}.
    """
    source = ROOT / f"{name}.md"
    if not source.exists():
        return False
    prose = re.sub(
        r"^(```|~~~).*?^\1", "", source.read_text(), flags=re.DOTALL | re.MULTILINE
    )
    return bool(MATH_IN_SOURCE.search(prose))


def solution_cells(name: str) -> int:
    """How many exercise solutions (cells tagged `solution`) a page's source has."""
    source = ROOT / f"{name}.md"
    if not source.exists():
        return 0
    return len(re.findall(r"^:tags: \[.*\bsolution\b.*\]$", source.read_text(), re.M))


# --------------------------------------------------------------------------------------
# What the page promises: the widget state saved in its HTML


@dataclass
class WidgetExpectations:
    """What the rendered widgets must show, read from the state saved in the page."""

    views: int = 0
    # slider readouts, formatted as the widget does
    readouts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # Text / Textarea values
    # the selected label of each Dropdown
    choices: list[str] = field(default_factory=list)
    outputs: int = 0  # Output widgets with saved outputs


def _squash(text: str) -> str:
    """Runs of whitespace as one space, as the page's checks read widget text."""
    return " ".join(text.split())


def _scripts(html: str, mime: str) -> list[dict]:
    pattern = rf'<script type="{re.escape(mime)}">(.*?)</script>'
    return [json.loads(body) for body in re.findall(pattern, html, flags=re.DOTALL)]


def _shown_models(state: dict, roots: list[str]) -> Iterator[dict]:
    """The models on screen: the displayed views and, recursively, their children."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        model_id = stack.pop()
        if model_id in seen or model_id not in state:
            continue
        seen.add(model_id)
        model = state[model_id]
        yield model
        stack += [
            child.removeprefix("IPY_MODEL_")
            for child in model["state"].get("children", [])
        ]


def widget_expectations(html: str) -> WidgetExpectations:
    """Read the page's saved widget state: what its displayed widgets must show."""
    expected = WidgetExpectations()
    states = _scripts(html, WIDGET_STATE)
    views = _scripts(html, WIDGET_VIEW)
    if not states or not views:
        return expected
    expected.views = len(views)
    state = states[0]["state"]
    for model in _shown_models(state, [view["model_id"] for view in views]):
        name, values = model["model_name"], model["state"]
        if name in ("IntSliderModel", "FloatSliderModel") and values.get(
            "readout", True
        ):
            expected.readouts.append(
                format(values["value"], values.get("readout_format", "d"))
            )
        elif name in ("TextModel", "TextareaModel"):
            expected.texts.append(_squash(values["value"]))
        elif name == "DropdownModel" and values.get("index") is not None:
            expected.choices.append(_squash(values["_options_labels"][values["index"]]))
        elif name == "OutputModel" and values.get("outputs"):
            expected.outputs += 1
    return expected


# --------------------------------------------------------------------------------------
# What the browser shows

# Runs in the page: everything the checks need, in one round trip.
_INSPECT = """() => {
  // the widgets show spaces as no-break spaces
  const squash = (text) => text.replace(/\\s+/g, ' ').trim();
  const article = document.querySelector('article') || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container')
       .forEach(e => e.remove());
  const colab = document.querySelector('a[href*="colab.research.google.com"]');
  const widgets = [...document.querySelectorAll('.widget-subarea')];
  return {
    brokenImages: [...document.images]
                    .filter(i => !(i.complete && i.naturalWidth > 0))
                    .map(i => i.getAttribute('src')),
    mathElements: document.querySelectorAll('.math').length,
    untypeset: [...document.querySelectorAll('.math')]
                 .filter(e => !e.querySelector('mjx-container'))
                 .map(e => e.textContent.slice(0, 60)),
    typeset: document.querySelectorAll('mjx-container').length,
    rawDollars: prose.textContent.includes('$$'),
    colab: colab ? colab.href : null,
    // the link to the same page in the other edition (book/_ext/translations.py)
    languageSwitch: document.querySelector('.language-switch a')?.href ?? null,
    // Han characters in the prose: the Chinese edition must show Chinese
    han: (prose.textContent.match(/[\\u4e00-\\u9fff]/g) || []).length,
    renderedViews: widgets.filter(e => e.querySelector('.jupyter-widgets')).length,
    readouts: [...document.querySelectorAll('.widget-readout')]
                .map(e => squash(e.value ?? e.textContent)),
    texts: [...document.querySelectorAll(
              '.jupyter-widgets input[type=text], .jupyter-widgets textarea')]
             .map(e => squash(e.value)),
    choices: [...document.querySelectorAll('.jupyter-widgets select')]
               .map(s => s.selectedIndex >= 0
                         ? squash(s.options[s.selectedIndex].textContent)
                         : null),
    outputs: [...document.querySelectorAll('.widget-output')]
               .filter(e => e.textContent.trim() || e.querySelector('img, svg, table'))
               .length,
    // each exercise solution: folded (a closed <details>) until the reader opens it
    solutionsFolded: [...document.querySelectorAll('.cell.tag_solution')]
                       .map(c => { const d = c.querySelector('details');
                                   return Boolean(d) && !d.open; }),
    // code blocks (source and printed output) wider than the page column: their
    // longest line, which the reader would have to scroll to see
    overflowing: [...article.querySelectorAll('pre')]
                   .filter(p => p.scrollWidth > p.clientWidth + 1)
                   .map(p => (p.innerText || p.textContent).split('\\n')
                              .reduce((a, b) => (b.length > a.length ? b : a), '')
                              .slice(0, 100)),
  };
}"""

# Runs in the page: whether the widget manager has rendered every saved view and
# Output widget.
_WIDGETS_RENDERED = """(expected) => {
  const areas = [...document.querySelectorAll('.widget-subarea')];
  const outputs = [...document.querySelectorAll('.widget-output')]
                    .filter(e => e.textContent.trim()
                                 || e.querySelector('img, svg, table'));
  return areas.length >= expected.views
         && areas.every(e => e.querySelector('.jupyter-widgets'))
         && outputs.length >= expected.outputs;
}"""
_IMAGES_SETTLED = "() => [...document.images].every(i => i.complete)"


@dataclass
class Visit:
    """One page as Chromium showed it: loading errors, and what the DOM holds."""

    base: str  # the site's URL: requests elsewhere are blocked and listed in `external`
    # (error message, its source URL); a blocked request logs a console error too, but
    # it is reported once, as external
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    external: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # local requests that failed
    dom: dict = field(default_factory=dict)

    def is_local(self, url: str) -> bool:
        return url.startswith((self.base, "data:", "blob:", "about:"))

    def on_console(self, message) -> None:
        if message.type == "error":
            self.console.append((message.text, message.location.get("url", "")))

    def on_request_failed(self, request) -> None:
        if self.is_local(request.url):
            self.failed.append(f"{request.url} ({request.failure})")

    def on_response(self, response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.url} (HTTP {response.status})")

    def route(self, route) -> None:
        """Let the site's own requests through; block and record everything else."""
        if self.is_local(route.request.url):
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the built site; keeps the test output free of one log line per request."""

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(book_html: Path) -> Iterator[str]:
    """The built site served over HTTP on localhost.

    file:// URLs would change how scripts load.
    """
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(book_html))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for every page, with a fresh profile."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            f"no Chromium found ({', '.join(CHROMIUM_NAMES)} or FOUNDRY_CHROMIUM): "
            "install Debian's chromium package to run the browser checks"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(60_000)
        yield context
        context.close()


def visit(
    browser,
    url: str,
    base: str,
    widgets: WidgetExpectations,
    screenshot: Path,
    redirect: str | None = None,
) -> Visit:
    """Open a page, wait for MathJax and widgets, look at the DOM, take a screenshot.

    `redirect`: the URL a page that only redirects (index.html) must lead to; the checks
    then apply there.
    """
    result = Visit(base)
    page = browser.new_page()
    page.on("console", result.on_console)
    page.on("pageerror", lambda error: result.page_errors.append(str(error)))
    page.on("requestfailed", result.on_request_failed)
    page.on("response", result.on_response)
    page.route("**/*", result.route)
    try:
        page.goto(url, wait_until="load")
        if redirect:
            page.wait_for_url(redirect, wait_until="load")
        page.evaluate(
            "async () => { "
            "if (window.MathJax?.startup?.promise) await MathJax.startup.promise; }"
        )
        if widgets.views and not result.external:
            page.wait_for_function(
                _WIDGETS_RENDERED,
                arg={"views": widgets.views, "outputs": widgets.outputs},
                timeout=30_000,
            )
        page.wait_for_function(_IMAGES_SETTLED)
        result.dom = page.evaluate(_INSPECT)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return result


def _site_is_vendored(book_html: Path) -> bool:
    """Whether the build serves MathJax itself (page_scripts.py found _vendor/)."""
    return (book_html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_every_page_is_checked(book_html):
    """PAGES lists every page the build made in each edition: none goes unchecked."""
    for edition, folder in EDITIONS.items():
        root = book_html / folder
        built = {
            p.relative_to(root).with_suffix("").as_posix()
            for p in root.rglob("*.html")
            if not p.relative_to(root).parts[0].startswith("_")
            and p.relative_to(root).parts[0] not in EDITIONS
        }
        assert built == set(PAGES), edition


def _redirect_target(html: str) -> str | None:
    """Where a redirect-only page (index.html) sends the reader, without .html."""
    found = re.search(
        r'http-equiv="Refresh" content="0; url=([^"]+)\.html"',
        html,
        flags=re.IGNORECASE,
    )
    return found.group(1) if found else None


def loading_problems(result: Visit, vendored: bool) -> list[str]:
    """What went wrong while the page loaded.

    That covers scripts, the console, requests, images and the offline rule.
    """
    problems = [f"uncaught JavaScript error: {error}" for error in result.page_errors]
    problems += [
        f"console error: {text} ({source})"
        for text, source in result.console
        if source not in result.external
    ]
    problems += [f"request failed: {failure}" for failure in result.failed]
    problems += [f"image did not load: {src}" for src in result.dom["brokenImages"]]
    if vendored:
        problems += [
            f"requested from the internet although _vendor/ was used: {url}"
            for url in result.external
        ]
    return problems


def math_problems(dom: dict, expects_math: bool) -> list[str]:
    """Formulas that MathJax did not typeset."""
    problems = [f"formula left as TeX: {text}" for text in dom["untypeset"]]
    if expects_math and not dom["typeset"]:
        problems.append("the source has math, but MathJax typeset nothing")
    if dom["rawDollars"]:
        problems.append("raw $$ in the page text: a formula was not parsed as math")
    return problems


def widget_problems(expected: WidgetExpectations, dom: dict) -> list[str]:
    """Saved widget views that were not rendered, or do not show their saved values."""
    problems = []
    if dom["renderedViews"] < expected.views:
        problems.append(f"{dom['renderedViews']} of {expected.views} widgets rendered")
    for kind in ("readouts", "texts", "choices"):
        problems += [
            f"widget value {value!r} not shown (the page's {kind}: {dom[kind]})"
            for value in getattr(expected, kind)
            if value not in dom[kind]
        ]
    if dom["outputs"] < expected.outputs:
        problems.append(
            f"{expected.outputs} Output widgets saved outputs, "
            f"{dom['outputs']} show them"
        )
    return problems


def language_problems(edition: str, shown: str, site: str, dom: dict) -> list[str]:
    """The switch must lead to the same page in the other edition; Chinese must show.

    Sphinx's own index and search pages have neither."""
    if shown in SPECIAL_PAGES:
        return []
    other = "en" if edition == "zh_CN" else "zh_CN"
    problems = []
    if dom["languageSwitch"] != site + EDITIONS[other] + f"{shown}.html":
        problems.append(f"the language switch leads to {dom['languageSwitch']}")
    if edition == "zh_CN" and not dom["han"]:  # how much: tests/test_translations.py
        problems.append("no Chinese in the prose")
    return problems


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("name", PAGES)
def test_page_in_the_browser(name, edition, book_html, site, browser):
    root, url = book_html / EDITIONS[edition], site + EDITIONS[edition]
    # the page the checks apply to: a redirect's target, else the page itself
    shown = _redirect_target((root / f"{name}.html").read_text()) or name
    html = (root / f"{shown}.html").read_text()
    widgets = widget_expectations(html)
    vendored = _site_is_vendored(root)
    result = visit(
        browser,
        url + f"{name}.html",
        site,
        widgets,
        book_html / "_screenshots" / EDITIONS[edition] / f"{name}.png",
        redirect=url + f"{shown}.html" if shown != name else None,
    )
    dom = result.dom

    problems = loading_problems(result, vendored)
    problems += language_problems(edition, shown, site, dom)
    if shown.startswith("notebooks/") and not (dom["colab"] or "").endswith(
        f"/{shown}.ipynb"
    ):
        problems.append(
            f"the Colab button opens {dom['colab']}, not the chapter's .ipynb"
        )
    problems += [
        f"a code block is wider than the page column at 1280 px: {line!r}"
        for line in dom["overflowing"]
    ]
    folded = dom["solutionsFolded"]
    if len(folded) != solution_cells(shown) or not all(folded):
        problems.append(
            f"{sum(folded)} of {solution_cells(shown)} exercise solutions are folded "
            f"({len(folded)} on the page)"
        )
    expects_math = source_has_math(shown)
    checks_skipped = (
        expects_math or dom["mathElements"] or widgets.views
    ) and not vendored
    if not checks_skipped:
        problems += math_problems(dom, expects_math) + widget_problems(widgets, dom)
    assert problems == [], f"{name}: " + "\n".join(problems)
    if checks_skipped:
        pytest.skip(
            "math and widgets not checked: "
            "the site loads MathJax and the widget manager from CDNs, "
            "which this offline test blocks "
            "(run python scripts/vendor_js.py, then rebuild)"
        )
