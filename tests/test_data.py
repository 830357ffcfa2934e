"""Sources, cleaning and token datasets.

Real corpora load, cleaning counts what it drops, the split never leaks, and the loaders
are deterministic.
"""

import numpy as np
import pytest
import torch

from foundry_core.data import (
    CleanConfig,
    Document,
    TokenWindows,
    clean_documents,
    load_corpus,
    make_loader,
    normalize_text,
    read_tokens,
    sources,
    split_documents,
    write_tokens,
)
from foundry_core.data.clean import split_words
from foundry_core.data.dedup import shingles


def doc(name: str, text: str) -> Document:
    return Document(name, name, text, "test")


def test_shakespeare_loads_from_the_verified_archive():
    modern, folio = sources.shakespeare(), sources.shakespeare_folio()
    assert len(modern) == 42 and len(folio) == 35
    assert {d.title for d in modern} >= {"Hamlet", "King Lear", "Sonnets"}
    assert sum(len(d.text) for d in modern) > 4_000_000
    assert all(not d.name.endswith("_f") for d in modern) and all(
        d.name.endswith("_f") for d in folio
    )


def test_chinese_sample_is_chinese():
    idioms = sources.chinese_idioms(limit=50)
    assert len(idioms) == 50
    text = "".join(d.text for d in idioms)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 0.8 * len(text)


def test_the_chinese_track_reads_the_whole_idiom_dictionary():
    documents = sources.chinese()
    entries = [e for d in documents for e in d.text.strip().split("\n\n")]
    assert len(documents) == 124 and len(entries) > 30_000
    assert sum(len(d.text) for d in documents) > 2_500_000
    first = entries[0].split("\n")
    assert first[1].startswith("拼音：") and any(f.startswith("释义：") for f in first)
    # "无" (none) is left out, never printed as a field's value
    assert not any(line.endswith("：无") for e in entries for line in e.split("\n"))
    assert load_corpus("chinese")[0] == documents[0]


def test_a_chinese_character_is_a_word():
    assert split_words("Hello  world!\n foo") == "Hello  world!\n foo".split()
    assert split_words("画蛇添足，ok 2") == ["画", "蛇", "添", "足", "，ok", "2"]
    # so near-duplicate shingles work on Chinese, which writes no spaces
    assert len(shingles("守株待兔的人", k=5)) == 2


def test_missing_source_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FOUNDRY_CACHE", str(tmp_path))
    monkeypatch.setenv("FOUNDRY_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match="python -m foundry_core.data.sources fetch"
    ):
        sources.shakespeare()
    with pytest.raises(
        ValueError, match="unknown corpus 'wiki': choose one of shakespeare"
    ):
        load_corpus("wiki")


def test_corrupt_archive_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FOUNDRY_CACHE", str(tmp_path))
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / sources.SHAKESPEARE.filename).write_bytes(
        b"not the real archive"
    )
    with pytest.raises(ValueError, match="has SHA-256 .* expected f393d09d"):
        sources.shakespeare()


def test_normalize_text():
    raw = "Cafe\u0301\r\nline\t end   \n\n\n\n\x07next\u200b\n"
    assert normalize_text(raw) == "Caf\u00e9\nline     end\n\nnext\n"


def test_cleaning_counts_what_each_rule_removed():
    good = "\n".join(
        f"Line {i} of honest verse, with words enough to keep." for i in range(20)
    )
    docs = [
        doc("play", "THE PLAY\nby William Shakespeare\n* * *\n" + good),
        doc("stub", "Return self."),
        doc("table", "1 2 3 4 5 6 7 8 9 | 10 11 12 13 14 15 16 ; 17 18 19 20 x\n" * 10),
        doc("filler", "the same line again and again\n" * 40),
    ]
    kept, report = clean_documents(docs, CleanConfig(min_doc_chars=50))
    assert [d.name for d in kept] == ["play"]
    assert "by William Shakespeare" not in kept[0].text and "* * *" not in kept[0].text
    assert report.lines_removed == {"boilerplate": 1, "no letters": 1}
    assert report.docs_removed == {"too short": 1, "mostly symbols": 1, "repetitive": 1}
    assert report.chars_after == len(kept[0].text) < report.chars_before
    assert {row["rule"] for row in report.rows()} == {
        "boilerplate",
        "no letters",
        "too short",
        "mostly symbols",
        "repetitive",
    }


def test_split_is_by_document_and_deterministic():
    docs = [doc(f"d{i}", f"text {i}") for i in range(30)]
    train, val = split_documents(docs, val_fraction=0.2, seed=3)
    assert len(val) == 6 and len(train) == 24
    assert not {d.name for d in train} & {d.name for d in val}
    assert split_documents(docs, 0.2, seed=3) == (train, val)
    assert split_documents(docs, 0.2, seed=4)[1] != val
    with pytest.raises(ValueError, match="empty corpus"):
        split_documents([])


def test_token_file_round_trip_and_dtype(tmp_path):
    docs = [doc("a", "abc"), doc("b", "de")]
    count = write_tokens(
        docs,
        lambda s: [ord(c) for c in s],
        tmp_path / "t.bin",
        vocab_size=300,
        separator=0,
    )
    tokens = read_tokens(tmp_path / "t.bin")
    assert count == 7 and tokens.dtype == np.uint16
    assert tokens.tolist() == [97, 98, 99, 0, 100, 101, 0]
    write_tokens(
        docs, lambda s: [70000], tmp_path / "big.bin", vocab_size=100_000, separator=1
    )
    assert read_tokens(tmp_path / "big.bin").dtype == np.uint32
    with pytest.raises(ValueError, match="outside vocab_size 50"):
        write_tokens(
            docs,
            lambda s: [ord(c) for c in s],
            tmp_path / "x.bin",
            vocab_size=50,
            separator=0,
        )
    write_tokens([], lambda s: [], tmp_path / "empty.bin", vocab_size=10, separator=0)
    with pytest.raises(ValueError, match="holds no tokens"):
        read_tokens(tmp_path / "empty.bin")
    with pytest.raises(FileNotFoundError, match="write it with write_tokens"):
        read_tokens(tmp_path / "missing.bin")


def test_windows_and_loader_are_deterministic():
    tokens = np.arange(1000, dtype=np.uint16)
    data = TokenWindows(tokens, seq_len=16, num_samples=64, seed=7)
    x, y = data[5]
    assert torch.equal(y[:-1], x[1:]) and x.dtype == torch.long
    first = [b[0] for b in make_loader(data, batch_size=8)]
    again = [
        b[0] for b in make_loader(TokenWindows(tokens, 16, 64, seed=7), batch_size=8)
    ]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = next(iter(make_loader(TokenWindows(tokens, 16, 64, seed=8), batch_size=8)))[
        0
    ]
    assert not torch.equal(first[0], other)


def test_ranks_read_disjoint_shards_and_resume_skips_seen_examples():
    data = TokenWindows(
        np.arange(500, dtype=np.uint16), seq_len=8, num_samples=40, seed=0
    )
    shards = [
        [x[0, 0].item() for x, _ in make_loader(data, 1, rank=r, world_size=2)]
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 20
    assert sorted(shards[0] + shards[1]) == sorted(int(s) for s in data.starts)
    resumed = [
        x[0, 0].item()
        for x, _ in make_loader(data, 1, rank=0, world_size=2, start_index=5)
    ]
    assert resumed == shards[0][5:]
    with pytest.raises(ValueError, match="rank 2 must lie in"):
        make_loader(data, 1, rank=2, world_size=2)


def test_strided_windows_tile_the_file():
    data = TokenWindows(np.arange(100, dtype=np.uint16), seq_len=10, strided=True)
    assert [int(s) for s in data.starts] == list(range(0, 90, 10))


def test_corpus_smaller_than_a_window_is_a_clear_error():
    with pytest.raises(
        ValueError, match="has 5 tokens, fewer than one window of seq_len \\+ 1 = 9"
    ):
        TokenWindows(np.arange(5), seq_len=8)
