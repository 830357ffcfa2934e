"""The data stages: the cleaned corpus (chapter 1), the tokenizer (chapter 2) and the
token files (chapter 4 reads them), built with the functions those chapters teach."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from ..data import (
    Document,
    clean_documents,
    load_corpus,
    split_documents,
    write_tokens,
)
from ..data.dedup import exact_dedup, minhash_dedup
from ..data.stream import (
    LARGE_CORPORA,
    Dedup,
    large_corpus_files,
    stream_documents,
    tokenize_stream,
)
from ..presets import Preset
from ..tokenizer import Tokenizer, train_tokenizer
from .results import Corpus, TokenFiles
from .store import _build_once, stage_dir


def _save_documents(documents: list[Document], path: Path) -> None:
    path.write_text(
        "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in documents)
    )


def _load_documents(path: Path) -> list[Document]:
    return [Document(**json.loads(line)) for line in path.read_text().splitlines()]


def ensure_corpus(preset: Preset) -> Corpus:
    """Load, clean, drop exact and near duplicates, split by document: (train, val)."""
    settings = preset.data
    folder = stage_dir("corpus", preset)

    def build(tmp: Path) -> None:
        documents = load_corpus(settings.corpus)[: settings.max_documents]
        documents, report = clean_documents(documents)
        keep, _ = exact_dedup([d.text for d in documents])
        documents = [documents[i] for i in keep]
        keep, _ = minhash_dedup(
            [d.text for d in documents],
            k=settings.shingle_words,
            threshold=settings.near_dup_threshold,
            seed=settings.seed,
        )
        documents = [documents[i] for i in keep]
        train, val = split_documents(documents, settings.val_fraction, settings.seed)
        _save_documents(train, tmp / "train.jsonl")
        _save_documents(val, tmp / "val.jsonl")
        (tmp / "report.json").write_text(
            json.dumps(
                {
                    "lines_removed": report.lines_removed,
                    "docs_removed": report.docs_removed,
                }
            )
        )

    _build_once(folder, build)
    return Corpus(
        _load_documents(folder / "train.jsonl"), _load_documents(folder / "val.jsonl")
    )


# documents of a large corpus the tokenizer learns from, beside the course corpus
LARGE_TOKENIZER_SAMPLE = 20_000


def ensure_tokenizer(preset: Preset) -> Tokenizer:
    """A SentencePiece BPE tokenizer with the preset's vocabulary size, trained on the
    training split (and the first documents of the large corpus, if it has one)."""
    folder = stage_dir("tokenizer", preset)

    def build(tmp: Path) -> None:
        train, _ = ensure_corpus(preset)
        texts = [d.text for d in train]
        large = large_corpus_files(preset.data.large_corpus)
        if large is not None:
            separator = LARGE_CORPORA[preset.data.large_corpus].separator
            sample = itertools.islice(
                stream_documents(large[0], separator), LARGE_TOKENIZER_SAMPLE
            )
            cleaned, _ = clean_documents(
                [Document(str(i), "", text, "sample") for i, text in enumerate(sample)]
            )
            texts += [d.text for d in cleaned]
        train_tokenizer(texts, preset.model.vocab_size, tmp)

    _build_once(folder, build)
    tokenizer = Tokenizer.load(folder / "tokenizer.model")
    tokenizer.check_compatible(preset.model.vocab_size)
    return tokenizer


def ensure_tokens(preset: Preset) -> TokenFiles:
    """Paths of the train and validation token files (documents separated by the
    end-of-text id): the course corpus's, followed by the large corpus's if the preset
    has one and it can be had."""
    folder = stage_dir("tokens", preset)

    def build(tmp: Path) -> None:
        tokenizer = ensure_tokenizer(preset)
        train, val = ensure_corpus(preset)
        large = large_corpus_files(preset.data.large_corpus)
        if large is not None:
            _write_large_tokens(preset, (train, val), large, tmp)
            return
        for name, documents in (("train", train), ("val", val)):
            write_tokens(
                documents,
                tokenizer.encode,
                tmp / f"{name}.bin",
                len(tokenizer),
                tokenizer.eos_id,
            )

    _build_once(folder, build)
    return TokenFiles(folder / "train.bin", folder / "val.bin")


def _write_large_tokens(
    preset: Preset, splits: Corpus, files: tuple[Path, Path], tmp: Path
) -> None:
    """Each split of the course corpus and the large corpus's file after it, streamed
    into one token file. The work happens in a folder that survives an interruption
    (tokenization resumes at its next shard); validation stories that also occur in
    training are dropped."""
    folder = stage_dir("tokens", preset)
    work = folder.with_name(f".{folder.name}.work")
    model = stage_dir("tokenizer", preset) / "tokenizer.model"
    separator = LARGE_CORPORA[preset.data.large_corpus].separator
    dedup = Dedup(set())
    for name, documents, path in zip(("train", "val"), splits, files):
        seen = work / f"{name}.seen.npy"  # what deduplication had seen after `name`
        if seen.exists():  # finished before an interruption
            dedup = Dedup.load(seen)
            continue
        texts = itertools.chain(
            (d.text for d in documents), stream_documents(path, separator)
        )
        tokenize_stream(texts, model, work / f"{name}.bin", dedup)
        dedup.save(seen)
    for name in ("train", "val"):
        for suffix in (".bin", ".json"):
            shutil.move(work / f"{name}{suffix}", tmp / f"{name}{suffix}")
    shutil.rmtree(work)
