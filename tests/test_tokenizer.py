"""Tokenizer: exact round trips, fixed special ids, reproducible training, clear errors.

Also a teaching BPE whose every recorded count survives an independent recount.
"""

import random
import string
from collections import Counter

import numpy as np
import pytest

from foundry_core.characters import (
    auto_character_coverage,
    characters_needed,
    vocabulary_coverage,
)
from foundry_core.tokenizer import (
    MODEL_FILENAME,
    SPECIAL_TOKENS,
    Merge,
    Tokenizer,
    pair_counts,
    split_words,
    train_bpe,
    train_tokenizer,
)

VOCAB = 480
WORDS = (
    "the a of and to in is model token tokens train training data language small large "
    "learn learned byte pair merge merges text word words vocabulary count counts "
    "frequent split whitespace space newline chapter course reader python tensor layer "
    "attention embedding output input loss step quick brown fox jumps over lazy dog "
    "lower lowest newer wider"
).split()
CHINESE = [
    "我们在学习如何训练一个小型语言模型。",
    "分词器把文本变成数字，再把数字变回文本。",
    "中文和英文可以混在一起。",
]
EMOJI = ["😀", "🎉", "🚀", "👍", "🤖"]


def make_corpus(seed: int = 0) -> list[str]:
    """A few hundred English-like lines, with digits, indentation, Chinese and emoji.

    Some are chat-formatted turns.
    """
    rng = random.Random(seed)
    docs = []
    for k in range(400):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        if k % 7 == 0:
            line = f"    {line} {rng.randint(0, 9999)}."
        if k % 11 == 0:
            line += " " + rng.choice(EMOJI)
        if k % 13 == 0:
            line += " " + rng.choice(CHINESE)
        docs.append(line)
    docs += [
        f"<|im_start|>user\n{rng.choice(WORDS)} ?<|im_end|>\n"
        f"<|im_start|>assistant\n{rng.choice(WORDS)}<|im_end|>"
        for _ in range(20)
    ]
    return docs


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def tok(tmp_path_factory, corpus) -> Tokenizer:
    return train_tokenizer(corpus, VOCAB, tmp_path_factory.mktemp("tok"))


def random_text(rng: random.Random, length: int) -> str:
    """Random strings over the characters that break naive tokenizers."""
    kinds = [
        lambda: rng.choice(string.ascii_letters + string.digits + string.punctuation),
        lambda: chr(rng.randint(0xA0, 0xFF)),  # Latin-1
        # CJK, mostly unseen in training: byte fallback
        lambda: chr(rng.randint(0x4E00, 0x9FFF)),
        lambda: chr(rng.randint(0x1F300, 0x1FAFF)),  # emoji
        lambda: rng.choice([" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2028"]),
        lambda: rng.choice(
            [
                "\u2581",
                "\x00",
                "\ufeff",
                "e\u0301",
                "ＡＢ",
                "<s>",
                "</s>",
                "<unk>",
                *SPECIAL_TOKENS,
            ]
        ),
        lambda: rng.choice(WORDS) + " ",
    ]
    return "".join(rng.choice(kinds)() for _ in range(length))


def one_line_error(error_type, func, *args, **kwargs) -> str:
    with pytest.raises(error_type) as caught:
        func(*args, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


# -------------------------------------------------------------- SentencePiece tokenizer


def test_round_trip_random_unicode(tok):
    rng = random.Random(1234)
    for _ in range(500):
        text = random_text(rng, rng.randint(0, 40))
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text, (text, ids)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " leading and trailing spaces ",
        "two  spaces,\tthree   spaces and a tab\n\nblank line\r\nwindows line",
        "我们在学习如何训练一个小型语言模型。😀🎉 and English 🚀",
        "unseen: 龘靐齉 🦄 👨‍👩‍👧 🇫🇷",
        # identity normalization: NFC, NFD and fullwidth all kept as typed
        "café vs cafe\u0301 vs ＣＡＦＥ",
        "the meta symbol \u2581 is not a space",
        "    def f(x):\n        return x  # indented code\n",
        "digits 12345 and 3.14159",
    ],
)
def test_round_trip_examples(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, bos=True, eos=True)) == text


def test_id_conventions(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tok.special_token_ids() == {
        "<pad>": 0,
        "<unk>": 1,
        "<s>": 2,
        "</s>": 3,
        "<|im_start|>": 4,
        "<|im_end|>": 5,
    }
    assert len(tok) == tok.vocab_size == VOCAB
    assert tok.encode("hi", bos=True, eos=True)[0 :: len(tok.encode("hi")) + 1] == [
        2,
        3,
    ]
    assert tok.decode([0, 0, 2, 3]) == ""


def test_special_tokens_are_single_ids(tok):
    for name in SPECIAL_TOKENS:
        assert tok.encode(name) == [tok.piece_to_id(name)]
    chat = (
        "<|im_start|>user\nwhat is a token?<|im_end|>\n"
        "<|im_start|>assistant\nA piece of text.<|im_end|>"
    )
    ids = tok.encode(chat)
    assert ids.count(4) == 2 and ids.count(5) == 2 and ids[0] == 4 and ids[-1] == 5
    assert tok.decode(ids) == chat
    # the control pieces written as text stay text: a user cannot forge an
    # end-of-sequence
    assert not {0, 1, 2, 3} & set(tok.encode("<s></s><pad><unk>"))


def test_training_is_deterministic(tmp_path, corpus, tok):
    again = train_tokenizer(corpus, VOCAB, tmp_path / "again")
    from_file = tmp_path / "corpus.txt"
    from_file.write_text("\n".join(corpus), encoding="utf-8")
    via_file = train_tokenizer(from_file, VOCAB, tmp_path / "via_file")
    first = tok.model_proto
    assert (
        (tmp_path / "again" / MODEL_FILENAME).read_bytes()
        == first
        == again.model_proto
        == via_file.model_proto
    )
    # no temp files left
    assert not [p for p in (tmp_path / "again").iterdir() if p.name != MODEL_FILENAME]


def test_save_load_and_batch(tmp_path, tok):
    texts = [random_text(random.Random(k), 30) for k in range(50)] + ["a\u2581b", ""]
    path = tok.save(tmp_path / "copy.model")
    loaded = Tokenizer.load(path)
    # a directory means tokenizer.model
    assert Tokenizer.load(tok.save(tmp_path)).model_proto == tok.model_proto
    assert loaded.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, bos=True, eos=True) == [
        tok.encode(t, bos=True, eos=True) for t in texts
    ]
    batch = tok.encode_batch(texts)
    assert tok.decode_batch(batch) == texts
    assert tok.decode(np.array(batch[0])) == texts[0]


def test_long_lines_are_not_dropped(tmp_path):
    rng = random.Random(0)
    # far over SentencePiece's 4192-byte default
    line = " ".join(rng.choice(WORDS) for _ in range(2000))
    assert len(line.encode()) > 4192
    # dropped, the corpus would be empty and training would fail
    tok = train_tokenizer([line], VOCAB, tmp_path)
    assert len(tok.encode(line)) < len(line.encode()) / 2


def testauto_character_coverage():
    assert auto_character_coverage(["plain English text"] * 10) == 1.0
    assert auto_character_coverage(["plain English text"] * 10 + CHINESE) == 0.9995
    # a vocabulary with room for few characters lowers the coverage, but never below
    # SentencePiece's floor
    assert auto_character_coverage(CHINESE, room=1000) == 0.9995
    assert auto_character_coverage(CHINESE, room=40) == 0.98


def test_errors_are_one_actionable_line(tmp_path, corpus, tok):
    assert "empty" in one_line_error(ValueError, train_tokenizer, [], VOCAB, tmp_path)
    assert "empty" in one_line_error(
        ValueError, train_tokenizer, ["", "\n\n"], VOCAB, tmp_path
    )
    message = one_line_error(ValueError, train_tokenizer, corpus, 100, tmp_path)
    assert "vocab_size 100 is too small" in message and ">= 278" in message
    many_chars = ["".join(chr(0x4E00 + k) for k in range(300))] * 3
    message = one_line_error(
        ValueError, train_tokenizer, many_chars, 400, tmp_path, character_coverage=1.0
    )
    assert "too small for this corpus" in message and "character_coverage" in message
    small = ["hello world, hello tokens"] * 20
    message = one_line_error(ValueError, train_tokenizer, small, 5000, tmp_path)
    assert (
        "vocab_size 5000 is too large for this corpus: at most" in message
        and "smaller vocab_size" in message
    )
    most = int(message.split("at most ")[1].split()[0])
    # the reported maximum is real
    assert train_tokenizer(small, most, tmp_path).vocab_size == most
    message = one_line_error(ValueError, tok.check_compatible, VOCAB + 1)
    assert f"tokenizer has {VOCAB} tokens but the model expects {VOCAB + 1}" in message
    tok.check_compatible(VOCAB)
    assert "outside" in one_line_error(ValueError, tok.decode, [VOCAB])
    missing = tmp_path / "nowhere" / "tokenizer.model"
    assert str(missing) in one_line_error(FileNotFoundError, Tokenizer.load, missing)
    assert "corpus" in one_line_error(
        FileNotFoundError, train_tokenizer, str(tmp_path / "no.txt"), VOCAB, tmp_path
    )


# -------------------------------------------------------------- teaching BPE

TOY = (
    "low low low low low lower lower "
    "newest newest newest newest newest newest widest widest widest"
)


def recount(text: str, merges: list[Merge]) -> list[Counter]:
    """Independent replay: every word occurrence as its own list.

    Before each merge, the pairs are counted one by one.
    """
    words = [[bytes([b]) for b in w.encode()] for w in split_words(text)]
    counts_before_each = []
    for merge in merges:
        counts = Counter()
        for w in words:
            for i in range(len(w) - 1):
                counts[(w[i], w[i + 1])] += 1
        counts_before_each.append(counts)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == merge.pair:
                    w[i : i + 2] = [w[i] + w[i + 1]]
                i += 1
    return counts_before_each


def test_split_words_rule():
    text = "  two  spaces\tand\na newline \n"
    assert "".join(split_words(text)) == text
    assert split_words("low lower  lowest") == ["low", " lower", " ", " lowest"]


def test_pair_counts_weights_words_by_frequency():
    counts = pair_counts({(b"a", b"b", b"a", b"b"): 2, (b"b", b"a"): 1})
    assert counts == Counter({(b"a", b"b"): 4, (b"b", b"a"): 3})


def test_bpe_first_merge_is_most_frequent_pair():
    model = train_bpe(TOY, 10)
    # by hand: "es" and "st" both occur 6 (newest) + 3 (widest) = 9 times; the tie goes
    # to (b"e", b"s")
    assert model.merges[0] == Merge((b"e", b"s"), b"es", 9)
    counts = recount(TOY, model.merges[:1])[0]
    best = max(counts.values())
    assert model.merges[0].count == best and model.merges[0].pair == min(
        p for p, c in counts.items() if c == best
    )


def test_bpe_every_count_matches_an_independent_recount():
    text = TOY + " " + " ".join(make_corpus()[:60])
    model = train_bpe(text, 80)
    assert len(model.merges) == 80
    for merge, counts in zip(model.merges, recount(text, model.merges)):
        best = max(counts.values())
        assert merge.count == counts[merge.pair] == best
        assert merge.pair == min(p for p, c in counts.items() if c == best)
        assert merge.new_token == merge.pair[0] + merge.pair[1]
    assert [m.count for m in model.merges] == sorted(
        (m.count for m in model.merges), reverse=True
    )


def test_bpe_round_trip_and_early_stop():
    text = "naïve café, naïve café!  中文 中文 😀😀\n\ttabs and  spaces " * 3
    model = train_bpe(text, 200)
    assert len(model.merges) < 200  # stopped once no pair occurred twice
    assert all(m.count >= 2 for m in model.merges)
    ids = model.encode(text)
    assert model.decode(ids) == text and len(ids) < len(text.encode())
    assert set(ids) <= set(model.vocab) and len(model.vocab) <= 256 + len(model.merges)
    for other in ["unseen words: ĳ 🦄 龘", "", "   "]:
        assert model.decode(model.encode(other)) == other
    assert train_bpe("abc", 5).merges == []
    assert train_bpe("ab ab", 5).merges == [Merge((b"a", b"b"), b"ab", 2)]


def test_characters_needed_counts_the_most_used_characters_first():
    assert characters_needed(["aab", "a b\n"]) == 2  # whitespace is not counted
    assert characters_needed(["aaab"], coverage=0.75) == 1
    assert characters_needed(["中文中文中", "文字"], coverage=1.0) == 3
    assert characters_needed([]) == 0


def test_vocabulary_coverage_is_the_share_of_characters_not_falling_back_to_bytes(tok):
    text = "jumps count of learn newline space vocabulary lazy lowest pair"
    assert vocabulary_coverage(tok, text) == 1.0
    assert vocabulary_coverage(tok, "ЖЗИ") == 0.0  # never seen: bytes only
    visible = sum(not ch.isspace() for ch in text)
    mixed = text + "Ж" * visible
    assert vocabulary_coverage(tok, mixed) == pytest.approx(0.5)
