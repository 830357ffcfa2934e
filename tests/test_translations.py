"""The Chinese edition keeps up with the English one.

The prose of every page is extracted afresh (a gettext build, nothing executed) and
compared with its catalogue in locales/zh_CN/: a page fails when under 95% of its
messages have a reviewed translation, when any is marked fuzzy, or when a translation
lost markup Sphinx must find again (a citation, inline code, math, a link target). The
failure prints the table and the pages that need work; scripts/translations.py says how
to bring them up to date.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import translations  # noqa: E402


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> dict:
    return translations.templates(translations.extract(tmp_path_factory.mktemp("pot")))


def test_every_page_has_a_catalogue(extracted):
    missing = [p for p in extracted if translations.read_catalogue(p) is None]
    assert not missing, f"pages without a catalogue (run its `update`): {missing}"
    pages = {
        p.relative_to(translations.CATALOGUES).with_suffix("").as_posix()
        for p in translations.CATALOGUES.rglob("*.po")
    }
    assert pages == set(extracted), "catalogues of pages the book no longer has"


def test_every_page_is_translated(extracted):
    statuses = [translations.page_status(p, t) for p, t in extracted.items()]
    behind = [s for s in statuses if not s.ok]
    problems = [f"{s.page}: {e}" for s in behind for e in s.errors]
    assert not behind, (
        "the Chinese edition is behind; run `python scripts/translations.py update`, "
        "translate the empty and fuzzy entries of these pages, then `... status`:\n"
        + translations.status_table(behind)
        + "\n"
        + "\n".join(problems[:20])
    )


@pytest.mark.parametrize(
    "english, chinese, lost",
    [
        ("See {cite}`a2020` and `x`.", "见 {cite}`a2020` 和 `x`。", None),
        ("See {cite}`a2020`.", "见文献。", "role"),
        ("Call `train()`.", "调用 train()。", "code"),
        ("With $x^2$.", "用 x^2。", "math"),
        ("[the data](01_data.md#split)", "[数据](01_data.md)", "link target"),
    ],
)
def test_markup_check_catches_what_a_translation_loses(english, chinese, lost):
    errors = translations.markup_errors(english, chinese)
    if lost is None:
        assert errors == []
    else:
        assert len(errors) == 1 and errors[0].startswith(lost), errors
