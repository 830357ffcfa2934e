"""The tokenizer: the SentencePiece BPE the course trains, with an exact round trip.

A language model only sees integers, so every chapter after this one depends on a
tokenizer that turns any string into ids and back again *exactly*. Two promises matter
most:

* Round trip: ``decode(encode(s)) == s`` for every string (spaces, tabs, newlines,
  Chinese, emoji). SentencePiece gets there with byte fallback (a character it never
  learned becomes its UTF-8 bytes) and with every whitespace-mangling normalization
  turned off.
* Reproducibility: the same corpus and settings give a byte-identical
  ``tokenizer.model``, so a cached artifact (keyed by its config) can be trusted and two
  machines agree.

Ids 0-3 are fixed (pad, unk, bos, eos); the chat markers come next and are always single
tokens. The same algorithm written out in plain Python, for reading, is in bpe.py.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import sentencepiece as spm

# Chapter 02 and the tests import the teaching BPE from here, where it lived before.
from .bpe import (  # noqa: F401
    BPEModel,
    Merge,
    merge_pair,
    pair_counts,
    split_words,
    train_bpe,
)
from .characters import auto_character_coverage
from .fileio import atomic_write_bytes

SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
CONTROL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")  # in id order
MODEL_FILENAME = "tokenizer.model"

_MIN_LEARNED_PIECES = 16  # below this a "trained" tokenizer has learned next to nothing
_SPACE_MARK = "\u2581"  # "▁": SentencePiece's stand-in for a space
# SentencePiece's default max_sentence_length: longer lines are dropped.
_SPM_MAX_LINE_BYTES = 4192


class Tokenizer:
    """A trained SentencePiece model with the course's ids and an exact round trip."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (
            self.sp.pad_id(),
            self.sp.unk_id(),
            self.sp.bos_id(),
            self.sp.eos_id(),
        )
        # A "▁" in the input would come back as a space: spell it as its 3 byte pieces.
        mark = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_MARK.encode()]
        self._mark_ids = mark if all(self.sp.is_byte(i) for i in mark) else []

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load ``tokenizer.model`` (or the directory holding it)."""
        path = _model_path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no tokenizer model at {path}: train one with train_tokenizer() first"
            )
        return cls(path.read_bytes())

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (never half a file); a directory gets tokenizer.model."""
        path = _model_path(path)
        atomic_write_bytes(path, self.model_proto)
        return path

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids for one string, optionally wrapped in <s> ... </s>."""
        if not isinstance(text, str):
            raise TypeError(
                f"encode takes one str, got {type(text).__name__}; "
                "use encode_batch for a list"
            )
        ids = self._encode_text(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(
        self, texts: Iterable[str], bos: bool = False, eos: bool = False
    ) -> list[list[int]]:
        """encode() for many strings: SentencePiece loops in C++, faster than Python."""
        texts = list(texts)
        batch = self.sp.encode(texts, add_bos=bos, add_eos=eos)
        return [
            self.encode(t, bos, eos) if _SPACE_MARK in t else ids
            for t, ids in zip(texts, batch)
        ]

    def decode(self, ids: Sequence[int] | Any) -> str:
        """The text of a list, tensor or array of ids; pad/bos/eos decode to nothing."""
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        self._check_ids(ids)
        return self.sp.decode(ids)

    def decode_batch(self, batch: Iterable[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def id_to_piece(self, i: int) -> str:
        self._check_ids([i])
        return self.sp.id_to_piece(i)

    def piece_to_id(self, piece: str) -> int:
        """The id of a piece (a space is written "▁"); an unknown piece gives unk_id."""
        return self.sp.piece_to_id(piece)

    def special_token_ids(self) -> dict[str, int]:
        """Ids of the control pieces (<pad> <unk> <s> </s>) and the chat markers."""
        ids = {
            self.id_to_piece(i): i
            for i in range(self.vocab_size)
            if self.sp.is_control(i) or self.sp.is_unknown(i)
        }
        ids.update({p: self.piece_to_id(p) for p in self._user_defined})
        return dict(sorted(ids.items(), key=lambda kv: kv[1]))

    def check_compatible(self, model_vocab_size: int) -> None:
        """Raise if a model's vocab size differs: its ids would silently misalign."""
        if model_vocab_size != self.vocab_size:
            raise ValueError(
                f"tokenizer has {self.vocab_size} tokens but the model expects "
                f"{model_vocab_size}: retrain one of them "
                f"(vocab_size={model_vocab_size} or "
                f"ModelConfig.vocab_size={self.vocab_size}) "
                "or load the matching checkpoint"
            )

    def _check_ids(self, ids: list[int]) -> None:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"token id {bad[0]} is outside this tokenizer's range "
                f"0..{self.vocab_size - 1}"
            )

    def _encode_text(self, text: str) -> list[int]:
        if _SPACE_MARK not in text or not self._mark_ids:
            return self.sp.encode(text)
        ids: list[int] = []
        for k, part in enumerate(text.split(_SPACE_MARK)):
            ids += (self._mark_ids if k else []) + self.sp.encode(part)
        return ids

    @cached_property
    def _user_defined(self) -> list[str]:
        # The Python binding has no is_user_defined(), and protobuf is not a dependency,
        # so we read the piece types from the model file ourselves. ModelProto.pieces
        # (field 1) holds, per piece, its text (field 1) and type (field 3; 4 means
        # USER_DEFINED).
        pieces = [
            dict(_proto_fields(value))
            for num, value in _proto_fields(self.model_proto)
            if num == 1
        ]
        return [p[1].decode() for p in pieces if p.get(3) == 4]


def train_tokenizer(
    texts: Iterable[str] | str | os.PathLike,
    vocab_size: int,
    out_dir: str | os.PathLike,
    *,
    character_coverage: float | None = None,
    byte_fallback: bool = True,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    seed: int = 0,
    num_threads: int = 4,
) -> Tokenizer:
    """Train a BPE tokenizer; write ``<out_dir>/tokenizer.model`` atomically.

    ``texts`` is an iterable of documents or the path of a text file; either way it is
    split into lines and fed in order. ``character_coverage=None`` picks 0.9995 for
    CJK-heavy text (>1% of the characters), whose long tail of rare characters would
    otherwise crowd out merges, lower when the vocabulary is too small for that many
    characters (down to SentencePiece's floor of 0.98), else 1.0. The model bytes
    depend only on the corpus and these arguments (``num_threads`` is recorded in the
    file, so it is a fixed number rather than the machine's core count).
    """
    special_tokens = tuple(special_tokens)
    _check_vocab_size(vocab_size, special_tokens, byte_fallback)
    lines = _read_lines(texts)
    if not lines:
        raise ValueError(
            "the training corpus is empty: "
            "pass at least one non-empty text or a non-empty file"
        )
    if character_coverage is None:
        room = vocab_size - _reserved_pieces(special_tokens, byte_fallback)
        character_coverage = auto_character_coverage(lines, room)
    # BPE on all lines in order draws nothing random; this is insurance.
    spm.set_random_generator_seed(seed)
    model_proto = _train_model_proto(
        lines,
        vocab_size,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        special_tokens=special_tokens,
        num_threads=num_threads,
    )
    tokenizer = Tokenizer(model_proto)
    tokenizer.save(Path(out_dir) / MODEL_FILENAME)
    return tokenizer


def _train_model_proto(
    lines: list[str],
    vocab_size: int,
    *,
    character_coverage: float,
    byte_fallback: bool,
    special_tokens: tuple[str, ...],
    num_threads: int,
) -> bytes:
    """SentencePiece's BPE trainer, set up for an exact round trip and determinism."""
    # model_writer keeps the temp path out of the model file (model_prefix is stored).
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            user_defined_symbols=list(special_tokens),
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece=CONTROL_PIECES[0],
            unk_piece=CONTROL_PIECES[1],
            bos_piece=CONTROL_PIECES[2],
            eos_piece=CONTROL_PIECES[3],
            # exact round trip: keep every space, prepend no "▁", normalize nothing
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            # determinism: every line, in the given order, and none silently dropped
            # for being longer than the default 4192 bytes
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=num_threads,
            max_sentence_length=max(
                _SPM_MAX_LINE_BYTES, max(len(s.encode()) for s in lines)
            ),
            minloglevel=2,
        )
    except RuntimeError as err:
        raise _explain_training_error(err, vocab_size) from None
    return model.getvalue()


def _reserved_pieces(special_tokens: tuple[str, ...], byte_fallback: bool) -> int:
    """Ids taken before BPE learns anything: control pieces, special tokens, bytes."""
    return len(CONTROL_PIECES) + len(special_tokens) + 256 * byte_fallback


def _check_vocab_size(
    vocab_size: int, special_tokens: tuple[str, ...], byte_fallback: bool
) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    if any(not isinstance(t, str) or not t for t in special_tokens) or len(
        set(special_tokens)
    ) < len(special_tokens):
        raise ValueError(
            f"special_tokens must be distinct non-empty strings, got {special_tokens!r}"
        )
    reserved = _reserved_pieces(special_tokens, byte_fallback)
    if vocab_size < reserved + _MIN_LEARNED_PIECES:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: {len(CONTROL_PIECES)} control "
            f"pieces, {len(special_tokens)} special tokens"
            f"{' and 256 byte pieces' if byte_fallback else ''} "
            f"already take {reserved} ids; "
            f"use vocab_size >= {reserved + _MIN_LEARNED_PIECES} "
            "(a few thousand is typical)"
        )


def _explain_training_error(err: RuntimeError, vocab_size: int) -> Exception:
    """Turn SentencePiece's internal check failures into one line saying what to do."""
    message = str(err)
    too_high = re.search(
        r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message
    )
    if too_high:
        return ValueError(
            f"vocab_size {vocab_size} is too large for this corpus: "
            f"at most {too_high.group(1)} is possible; "
            "use a smaller vocab_size or more text"
        )
    too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_small:
        return ValueError(
            f"vocab_size {vocab_size} is too small for this corpus: "
            "its characters and the reserved pieces "
            f"need at least {too_small.group(1)}; "
            "use a larger vocab_size or a lower character_coverage"
        )
    return err


def _model_path(path: str | os.PathLike) -> Path:
    """A directory stands for the tokenizer.model inside it."""
    path = Path(path)
    return path / MODEL_FILENAME if path.is_dir() else path


def _read_lines(texts: Iterable[str] | str | os.PathLike) -> list[str]:
    """Non-empty lines; a str or Path names a file, anything else holds documents."""
    if isinstance(texts, (str, os.PathLike)):
        path = Path(texts)
        if not path.is_file():
            raise FileNotFoundError(
                f"no corpus file at {str(path)[:80]!r}: "
                "pass a file's path or a list of strings"
            )
        # The bytes as they are: no newline translation.
        texts = [path.read_bytes().decode("utf-8")]
    return [line for text in texts for line in text.split("\n") if line]


def _proto_fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: int for a varint, else raw bytes."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while pos < len(buf):
        key = varint()
        if key & 7 == 0:
            yield key >> 3, varint()
        else:  # length-delimited (wire type 2) or fixed 64/32 bits (1/5)
            size = varint() if key & 7 == 2 else {1: 8, 5: 4}[key & 7]
            pos += size
            yield key >> 3, buf[pos - size : pos]
