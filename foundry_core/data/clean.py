"""Cleaning: make every document's text canonical, drop what is not text, and count
what was dropped.

Each step is a small function; `clean_documents` runs them in order and returns a
report of how many lines and documents each rule removed, with examples, so that no
filter works unseen.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from .sources import Document

# Lines that belong to the edition, not to the work: bylines, e-text and licence
# notices, links.
BOILERPLATE = (
    re.compile(r"^\s*by William Shakespeare\s*$", re.IGNORECASE),
    re.compile(r"project gutenberg|\be-?text\b|gutenberg\.org", re.IGNORECASE),
    re.compile(r"https?://|www\.|\S+@\S+\.\w+"),
    re.compile(r"^\s*(copyright|all rights reserved)\b", re.IGNORECASE),
)
# a Han character is a word of its own: Chinese writes no spaces between words
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{HAN}]|[^\\s{HAN}]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleanConfig:
    # canonical composition: "é" is one code point however it was typed
    unicode_form: str = "NFC"
    # longer lines are data dumps, not prose or verse
    max_line_chars: int = 2000
    # shorter documents teach too little to keep
    min_doc_chars: int = 200
    # documents mostly made of digits and symbols are tables or code
    max_symbol_fraction: float = 0.3
    # documents repeating the same lines are generated filler
    min_unique_line_fraction: float = 0.3


@dataclass
class CleanReport:
    """What each rule removed, with up to three examples per rule."""

    lines_removed: Counter = field(default_factory=Counter)
    docs_removed: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    chars_before: int = 0
    chars_after: int = 0
    # characters changed by Unicode/control/whitespace normalisation
    changed_by_normalisation: int = 0

    def note(self, rule: str, example: str, doc: bool = False) -> None:
        (self.docs_removed if doc else self.lines_removed)[rule] += 1
        if len(self.examples[rule]) < 3:
            self.examples[rule].append(example[:80])

    def merge(self, other: CleanReport) -> None:
        """Add what `other` counted (a report of the next part of a stream)."""
        self.lines_removed.update(other.lines_removed)
        self.docs_removed.update(other.docs_removed)
        for rule, examples in other.examples.items():
            self.examples[rule] = (self.examples[rule] + examples)[:3]
        self.chars_before += other.chars_before
        self.chars_after += other.chars_after
        self.changed_by_normalisation += other.changed_by_normalisation

    def rows(self) -> list[dict[str, object]]:
        """The report as table rows: rule, what it applies to, how many it removed,
        an example."""
        rows = [
            {
                "rule": r,
                "removes": "lines",
                "count": n,
                "example": repr(self.examples[r][0]),
            }
            for r, n in self.lines_removed.most_common()
        ]
        rows += [
            {
                "rule": r,
                "removes": "documents",
                "count": n,
                "example": repr(self.examples[r][0]),
            }
            for r, n in self.docs_removed.most_common()
        ]
        return rows


def split_words(text: str) -> list[str]:
    """The text's words: runs of non-space characters, except that each Chinese
    character counts as one, as Chinese evaluation usually counts them. English text
    splits exactly as `str.split()` splits it."""
    return _WORD.findall(text)


def normalize_text(text: str, form: str = "NFC") -> str:
    """Unicode normal form, Unix newlines, no control or zero-width characters, no
    trailing spaces, tabs as spaces, and at most one empty line in a row."""
    text = unicodedata.normalize(form, text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.replace("\t", "    "))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"


def line_rule(line: str, config: CleanConfig) -> str | None:
    """The name of the rule that removes this line, or None to keep it."""
    if any(pattern.search(line) for pattern in BOILERPLATE):
        return "boilerplate"
    if len(line) > config.max_line_chars:
        return "line too long"
    if line.strip() and not any(ch.isalpha() for ch in line):
        return "no letters"  # separators such as '* * *' or stray page numbers
    return None


def document_rule(text: str, config: CleanConfig) -> str | None:
    """The name of the rule that removes this document, or None to keep it."""
    if len(text) < config.min_doc_chars:
        return "too short"
    visible = [ch for ch in text if not ch.isspace()]
    symbols = sum(1 for ch in visible if not ch.isalpha())
    if visible and symbols / len(visible) > config.max_symbol_fraction:
        return "mostly symbols"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines and len(set(lines)) / len(lines) < config.min_unique_line_fraction:
        return "repetitive"
    return None


def clean_documents(
    documents: list[Document], config: CleanConfig = CleanConfig()
) -> tuple[list[Document], CleanReport]:
    """Normalise each document, then drop the lines and documents a rule rejects."""
    report = CleanReport()
    kept = []
    for doc in documents:
        report.chars_before += len(doc.text)
        text = normalize_text(doc.text, config.unicode_form)
        report.changed_by_normalisation += len(doc.text) - len(text)
        lines = []
        for line in text.split("\n"):
            rule = line_rule(line, config)
            if rule is None:
                lines.append(line)
            else:
                report.note(rule, line)
        text = normalize_text("\n".join(lines), config.unicode_form)
        rule = document_rule(text, config)
        if rule is not None:
            report.note(rule, f"{doc.name}: {text[:60]}", doc=True)
            continue
        report.chars_after += len(text)
        kept.append(replace(doc, text=text))
    return kept, report
