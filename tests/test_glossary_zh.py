"""The English-Chinese term table (book/glossary_zh.md) keeps step with the glossary:
every glossary entry has a row, under the same English names, with a Chinese term and a
Chinese definition, and no row names a term the glossary lacks."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CJK = re.compile(r"[\u4e00-\u9fff]")


def glossary_entries() -> list[str]:
    """Each entry's names, joined by " / " as the table writes them."""
    text = (ROOT / "book" / "glossary.md").read_text()
    body = text.split("```{glossary}")[1].split("\n```")[0]
    entries, names = [], []
    for line in body.splitlines():
        if line and not line.startswith(" "):
            names.append(line.strip())
        elif line.startswith("  ") and names:
            entries.append(" / ".join(names))
            names = []
    return entries


def table_rows() -> dict[str, list[str]]:
    """English names -> (Chinese term, Chinese definition, chapters)."""
    text = (ROOT / "book" / "glossary_zh.md").read_text()
    rows = [line.strip("|").split(" | ") for line in text.splitlines()]
    return {
        cells[0].strip(): [c.strip() for c in cells[1:]]
        for cells in rows
        if len(cells) == 4 and cells[0].strip() != "English"
    }


def test_every_glossary_entry_has_a_chinese_row_and_no_more():
    entries, rows = glossary_entries(), table_rows()
    assert len(entries) > 50
    missing = [e for e in entries if e not in rows]
    extra = [name for name in rows if name not in entries]
    assert not missing and not extra, (
        f"missing rows: {missing}; rows not in the glossary: {extra}"
    )


def test_rows_hold_a_chinese_term_definition_and_chapter():
    for english, (term, definition, chapter) in table_rows().items():
        assert CJK.search(term), english
        assert CJK.search(definition) and definition.endswith("。"), english
        assert re.search(r"第 \d|附录 A\d", chapter), english
