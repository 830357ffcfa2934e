"""How many characters a vocabulary must hold: English a hundred, Chinese thousands.

Before BPE can merge a single pair, every character it keeps must be a piece of the
vocabulary; the rest fall back to their UTF-8 bytes. These measures say how many
characters a text needs (chapter 2) and pick SentencePiece's character coverage.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

MIN_CHARACTER_COVERAGE = 0.98  # the lowest SentencePiece accepts
# kana, CJK ideographs (+ extension A, compatibility, extensions B-F), Hangul syllables
_CJK = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0002fa1f]"
)


def characters_needed(texts: Iterable[str], coverage: float = 1.0) -> int:
    """How many distinct characters a vocabulary must hold as pieces to cover
    `coverage` of the text's characters (whitespace aside): English needs about a
    hundred, Chinese thousands, before a single pair of them can be merged."""
    counts = Counter(ch for text in texts for ch in text if not ch.isspace())
    needed, covered, total = 0, 0, sum(counts.values())
    for _, n in counts.most_common():
        if covered >= coverage * total:
            break
        needed, covered = needed + 1, covered + n
    return needed


def vocabulary_coverage(tokenizer: Tokenizer, text: str) -> float:
    """The share of `text`'s characters (whitespace aside) that the vocabulary holds;
    the others fall back to their UTF-8 bytes, up to four tokens per character."""
    fallback = bytearray(
        int(tokenizer.id_to_piece(i)[3:-1], 16)  # "<0xE4>" -> 0xE4
        for i in tokenizer.encode(text)
        if tokenizer.sp.IsByte(i)
    )
    unknown = [ch for ch in fallback.decode("utf-8", "replace") if not ch.isspace()]
    visible = sum(1 for ch in text if not ch.isspace())
    return 1 - len(unknown) / visible


def auto_character_coverage(lines: Iterable[str], room: int | None = None) -> float:
    """0.9995 if over 1% of the characters are CJK, else 1.0: SentencePiece's advice.

    With `room` (the pieces the vocabulary can learn), CJK text whose 0.9995 needs more
    than half the room as single characters gets a lower coverage: the most frequent
    characters fill half, merges the other half, and rarer characters fall back to
    their bytes. Without it a 1k vocabulary could not be trained on Chinese at all.
    """
    lines = list(lines)
    cjk = sum(len(_CJK.findall(line)) for line in lines)
    if cjk <= 0.01 * sum(map(len, lines)):
        return 1.0
    if room is None:
        return 0.9995
    counts = Counter(ch for line in lines for ch in line)
    frequent = sum(n for _, n in counts.most_common(room // 2))
    share = round(frequent / sum(counts.values()), 4)
    return min(0.9995, max(MIN_CHARACTER_COVERAGE, share))
