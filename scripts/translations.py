"""The Chinese edition's message catalogues: extract, check, and count.

The book is translated the standard Sphinx way: a `gettext` build cuts the prose of
every page into messages (one paragraph, heading, list item or caption each), and
`locales/zh_CN/LC_MESSAGES/<page>.po` holds the Chinese of each message. Code, and
what the code prints, stays as it is, so both editions show the outputs of one run.

    python scripts/translations.py update   # after editing English prose
    (translate the entries it lists: empty or marked "fuzzy" in the .po files)
    python scripts/translations.py status   # every page at or above the bar, no errors

`update` runs the gettext build (no notebook is executed; seconds) and merges the
new messages into the catalogues: a message whose English changed keeps its old
translation marked fuzzy, as a hint, and counts as untranslated until reviewed.
`status` counts each page against freshly extracted English and makes sure every
translation keeps the markup Sphinx must find again: roles and citations, inline
code, math, link targets. `check [page ...]` does the same against the catalogues as
they stand, without the gettext build (what a translator runs while working).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = "zh_CN"
CATALOGUES = ROOT / "locales" / LANGUAGE / "LC_MESSAGES"
BAR = 0.95  # the share of a page's messages that must be translated, none fuzzy

# markup that must survive translation unchanged, looked for in this order (each
# found piece is cut out before the next kind is sought): a role with its target
# ({cite}`a,b`; of {doc}`title <page>` only the target), inline code, inline math,
# and a link's target
_KEPT = {
    "role": re.compile(r"(\{[\w:-]+\})`(?:[^`<]*<([^`>]+)>|([^`]+))`"),
    "code": re.compile(r"``[^`]+``|`[^`]+`"),
    "math": re.compile(r"(?<![\\$])\$[^$]+\$(?!\$)"),
    "link target": re.compile(r"\]\(([^)]+)\)"),
}


# "7. A reward model" is a chapter title in the English source, but a translation
# that starts this way is parsed as a numbered list and silently left untranslated
NUMBERED = re.compile(r"\d+\. ")


@dataclass
class PageStatus:
    page: str
    messages: int
    translated: int
    fuzzy: int
    errors: list[str]

    @property
    def share(self) -> float:
        return self.translated / self.messages if self.messages else 1.0

    @property
    def ok(self) -> bool:
        return self.share >= BAR and not self.fuzzy and not self.errors


def gettext_config(out: Path) -> Path:
    """_config.yml for a gettext build: nothing executed, one catalogue per page."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["local_extensions"] = {
        name: str(ROOT / path)
        for name, path in config["sphinx"]["local_extensions"].items()
    }
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def extract(out: Path) -> Path:
    """Run the gettext build into `out` and return the folder of its .pot files."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(ROOT), "--config", str(gettext_config(out))]
    cmd += ["--path-output", str(out), "--builder", "custom"]
    cmd += ["--custom-builder", "gettext"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f"the gettext build failed:\n{result.stderr[-4000:]}")
    return out / "_build" / "gettext"


def toc_template() -> Catalog:
    """The sidebar's part captions from _toc.yml, which no page holds for gettext.

    The Chinese build reads their translations from the catalogue `_toc`."""
    catalogue = Catalog()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        if part.get("caption"):
            catalogue.add(part["caption"])
    return catalogue


def templates(pot_dir: Path) -> dict[str, Catalog]:
    """Page name (book/intro, notebooks/01_data, ...) -> its extracted messages."""
    found = {}
    for pot in sorted(pot_dir.rglob("*.pot")):
        with pot.open("rb") as handle:
            found[pot.relative_to(pot_dir).with_suffix("").as_posix()] = read_po(handle)
    found["_toc"] = toc_template()
    return found


def read_catalogue(page: str) -> Catalog | None:
    path = CATALOGUES / f"{page}.po"
    if not path.exists():
        return None
    with path.open("rb") as handle:
        return read_po(handle, locale=LANGUAGE)


def write_catalogue(page: str, catalogue: Catalog) -> None:
    path = CATALOGUES / f"{page}.po"
    path.parent.mkdir(parents=True, exist_ok=True)
    for message in catalogue:  # babel reads "15% of" or "{doc}" as formats; Sphinx not
        message.flags -= {"python-format", "python-brace-format"}
    catalogue.fuzzy = False  # the header: a fuzzy one would make msgfmt skip it
    with path.open("wb") as handle:
        write_po(handle, catalogue, width=0, omit_header=False, sort_output=False)


def update(pot_dir: Path) -> None:
    """Merge freshly extracted messages into every page's catalogue."""
    for page, template in templates(pot_dir).items():
        catalogue = read_catalogue(page)
        if catalogue is None:
            catalogue = Catalog(locale=LANGUAGE, project="LLM Foundry")
            catalogue.creation_date = template.creation_date
        created = catalogue.creation_date  # kept: an update changes only messages
        catalogue.update(template, update_header_comment=False)
        catalogue.creation_date = created
        catalogue.obsolete.clear()  # git remembers removed messages
        write_catalogue(page, catalogue)


def markup_errors(english: str, chinese: str) -> list[str]:
    """What markup of the English message its translation lost or changed."""
    errors = []
    if NUMBERED.match(chinese):  # Sphinx parses the translation anew, as MyST
        errors.append("a heading such as '7. ...' reads as a list: write '7\\. ...'")
    for name, pattern in _KEPT.items():
        want, got = Counter(pattern.findall(english)), Counter(pattern.findall(chinese))
        if name == "role":  # (name, titled target, bare target) -> name plus target
            want, got = (
                Counter(f"{r}`{a or b}`" for r, a, b in c.elements())
                for c in (want, got)
            )
        english, chinese = pattern.sub(" ", english), pattern.sub(" ", chinese)
        if want != got:
            lost = sorted((want - got).elements())
            added = sorted((got - want).elements())
            errors.append(f"{name}: lost {lost}, added {added}")
    return errors


def page_status(page: str, template: Catalog) -> PageStatus:
    catalogue = read_catalogue(page)
    wanted = [m.id for m in template if m.id]
    status = PageStatus(page, len(wanted), 0, 0, [])
    if catalogue is None:
        return status
    for english in wanted:
        message = catalogue.get(english)
        if message is None or not message.string:
            continue
        if message.fuzzy:
            status.fuzzy += 1
            continue
        status.translated += 1
        for error in markup_errors(english, message.string):
            status.errors.append(f"{english[:60]!r}: {error}")
    return status


def status_table(statuses: list[PageStatus]) -> str:
    lines = ["| page | messages | translated | fuzzy | share | markup errors |"]
    lines.append("|---|---|---|---|---|---|")
    for s in statuses:
        lines.append(
            f"| {s.page} | {s.messages} | {s.translated} | {s.fuzzy} "
            f"| {s.share:.1%} | {len(s.errors)} |"
        )
    return "\n".join(lines)


def check(pages: list[str]) -> int:
    """Count and check catalogues as they stand, without extracting them anew."""
    statuses = []
    for page in pages or sorted(
        p.relative_to(CATALOGUES).with_suffix("").as_posix()
        for p in CATALOGUES.rglob("*.po")
    ):
        statuses.append(page_status(page, read_catalogue(page) or Catalog()))
    return report(statuses)


def report(statuses: list[PageStatus]) -> int:
    print(status_table(statuses))
    for s in statuses:
        for error in s.errors:
            print(f"{s.page}: {error}")
    behind = [s.page for s in statuses if not s.ok]
    if behind:
        print(f"below {BAR:.0%} translated, fuzzy or with markup errors: {behind}")
    return 1 if behind else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["update", "status", "check"])
    parser.add_argument("pages", nargs="*", help="check: e.g. notebooks/01_data")
    args = parser.parse_args()
    if args.command == "check":
        return check(args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        pot_dir = extract(Path(tmp))
        if args.command == "update":
            update(pot_dir)
        statuses = [page_status(p, t) for p, t in templates(pot_dir).items()]
    return report(statuses)


if __name__ == "__main__":
    sys.exit(main())
