"""The Chinese edition: built with the English one, from the same executed notebooks.

`jupyter-book build .` builds the English site. When it has finished, this extension
builds the Chinese site into its `zh_CN/` folder: the same sources, with the prose
replaced by the translations in `locales/zh_CN/LC_MESSAGES/` (scripts/translations.py).
Both editions must show the numbers of one run, and executing every chapter twice would
double the build, so:

- the English build executes through myst-nb's `cache` mode into a cache it empties
  first, so every chapter still runs afresh in every build (jupyter-cache cannot tell
  when foundry_core changed);
- the Chinese build reads that cache and executes nothing: a chapter it ran again
  (its code cells not found in the cache) is a build error, not a silent second run.

Every page of either edition gets a link to the same page in the other one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

CHINESE = "zh_CN"
SWITCH = (
    '<p class="language-switch" style="text-align: right; margin: 0;">'
    '<a href="{href}" hreflang="{lang}" lang="{lang}">{label}</a></p>\n'
)


def is_chinese(config: Config) -> bool:
    return (config.language or "en") == CHINESE


def cache_path(app: Sphinx) -> Path:
    """Where myst-nb keeps executed notebooks (by default beside the html folder)."""
    chosen = app.config.nb_execution_cache_path
    if chosen:
        return Path(app.srcdir, chosen)
    return Path(app.outdir).parent / ".jupyter_cache"


def empty_the_cache(app: Sphinx, config: Config) -> None:
    """English build: start from an empty execution cache, so every chapter runs."""
    if is_chinese(config):
        if config.nb_execution_mode != "cache":
            raise ExtensionError("the Chinese edition reads the English build's cache")
        return
    if config.nb_execution_mode == "cache":
        shutil.rmtree(cache_path(app), ignore_errors=True)


def reread_everything(app: Sphinx, env, added, changed, removed) -> list[str]:
    """English build: read (so execute) every page, even those Sphinx has in store.

    The cache was just emptied, and the Chinese build must find every chapter in it.
    """
    return [] if is_chinese(app.config) else sorted(env.found_docs)


def cached_runs(app: Sphinx) -> set[tuple[int, str]]:
    """The executions in the build's cache: (record, notebook hash) pairs."""
    from jupyter_cache import get_cache

    cache = get_cache(cache_path(app))
    return {(r.pk, r.hashkey) for r in cache.list_cache_records()}


def add_language_switch(app: Sphinx, pagename: str, templatename, context, doctree):
    """A link, at the top of each page, to the same page in the other edition."""
    if "body" not in context:
        return
    up = "../" * pagename.count("/")
    if is_chinese(app.config):
        link = SWITCH.format(href=f"../{up}{pagename}.html", lang="en", label="English")
    else:
        link = SWITCH.format(
            href=f"{up}{CHINESE}/{pagename}.html", lang="zh-CN", label="简体中文"
        )
    context["body"] = link + context["body"]


def chinese_config(app: Sphinx, out: Path) -> Path:
    """The project's _config.yml for the Chinese build, written into `out`."""
    config = yaml.safe_load(Path(app.srcdir, "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "cache"
    config["execute"]["cache"] = str(cache_path(app))
    sphinx = config.setdefault("sphinx", {})
    sphinx["local_extensions"] = {
        name: str(Path(app.srcdir, path))
        for name, path in (sphinx.get("local_extensions") or {}).items()
    }
    sphinx.setdefault("config", {})["language"] = CHINESE
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def chinese_toc(app: Sphinx, out: Path) -> Path:
    """The table of contents with its part captions translated (locales/.../_toc.po)."""
    from babel.messages.pofile import read_po

    toc = yaml.safe_load(Path(app.srcdir, app.config.external_toc_path).read_text())
    path = Path(app.srcdir, "locales", CHINESE, "LC_MESSAGES", "_toc.po")
    with path.open("rb") as handle:
        catalogue = read_po(handle)
    for part in toc.get("parts", []):
        message = catalogue.get(part.get("caption", ""))
        if message is not None and message.string and not message.fuzzy:
            part["caption"] = message.string
    out_path = out / "_toc.yml"
    out_path.write_text(yaml.safe_dump(toc, allow_unicode=True, sort_keys=False))
    return out_path


def build_chinese(app: Sphinx, exception: Exception | None) -> None:
    """After a successful English html build, build the Chinese site into zh_CN/."""
    if exception or app.builder.name != "html" or is_chinese(app.config):
        return
    if app.config.nb_execution_mode != "cache":
        logger.warning("[translations] no execution cache: no Chinese edition")
        return
    if not Path(app.srcdir, app.config.external_toc_path).is_file():
        return  # a single page (jupyter-book build page.md): no book to translate
    work = Path(app.outdir).parent / f"{CHINESE}_build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    config = chinese_config(app, work)
    cmd = [str(jupyter_book), "build", app.srcdir, "--config", str(config)]
    cmd += ["--path-output", str(work), "--toc", str(chinese_toc(app, work))]
    # under -W --keep-going Sphinx 7 sets keep_going and leaves warningiserror False
    if app.warningiserror or app.keep_going:
        cmd += ["-W", "--keep-going"]
    logger.info("[translations] building the Chinese edition")
    runs = cached_runs(app)
    result = subprocess.run(
        cmd, capture_output=True, text=True, cwd=app.srcdir, env=os.environ.copy()
    )
    if result.returncode:
        raise ExtensionError(
            "the Chinese edition failed to build:\n"
            + result.stdout[-6000:]
            + result.stderr[-6000:]
        )
    if cached_runs(app) != runs:
        raise ExtensionError(
            "the Chinese edition executed chapters again instead of reading the "
            "English build's cache: their code cells must be the same"
        )
    target = Path(app.outdir, CHINESE)
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(work / "_build" / "html"), target)
    offer_the_executed_notebooks(Path(app.outdir), target)
    logger.info(f"[translations] the Chinese edition is in {target}")


def offer_the_executed_notebooks(english: Path, chinese: Path) -> None:
    """The Chinese pages' "Download .ipynb" gets the run's outputs, as the English has.

    myst-nb 1.4 writes the notebook it read, not the one it merged from the cache, so
    the Chinese build's copies carry no outputs: the English build's replace them (the
    same notebooks, which Colab opens from both editions)."""
    for executed in (english / "_sources").rglob("*.ipynb"):
        copy = chinese / "_sources" / executed.relative_to(english / "_sources")
        if copy.exists():
            shutil.copy2(executed, copy)


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", empty_the_cache, priority=810)
    app.connect("env-get-outdated", reread_everything)
    app.connect("html-page-context", add_language_switch)
    app.connect("build-finished", build_chinese)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
