"""Corpora too large to hold in memory: fetched once, streamed, cleaned, deduplicated
and tokenized in parallel into one memory-mapped token file.

Shakespeare holds 1.3M tokens; a GPU preset reads about a hundred million. Its data
comes from a large public corpus (TinyStories, Eldan and Li 2023) that only an online
reader can fetch, so nothing here runs in CI except on a small local file in the same
format. Every step resumes after an interruption: the download continues where it
stopped (an HTTP range request), and tokenization writes one shard of documents at a
time under its final name, so a rerun skips the shards already on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..fileio import atomic_write, atomic_write_bytes
from ..history import progress_bar
from .clean import CleanConfig, CleanReport, clean_documents
from .dataset import token_dtype
from .dedup import _digest, normalize_for_dedup
from .sources import Document, _offline, _sha256, cache_dir

HUGGING_FACE = "https://huggingface.co"


@dataclass(frozen=True)
class RemoteFile:
    """A file in a Hugging Face dataset repository, checked against the SHA-256 the
    Hub records for it."""

    repository: str  # e.g. "roneneldan/TinyStories"
    path: str  # inside the repository

    @property
    def url(self) -> str:
        return f"{HUGGING_FACE}/datasets/{self.repository}/resolve/main/{self.path}"

    def listing_url(self) -> str:
        """The Hub's file listing, which gives each large file's size and SHA-256."""
        return f"{HUGGING_FACE}/api/datasets/{self.repository}/tree/main"


@dataclass(frozen=True)
class LargeCorpus:
    """A pretraining corpus of plain-text files whose documents are separated by a
    marker."""

    name: str
    train: RemoteFile
    valid: RemoteFile
    separator: str
    licence: str


TINYSTORIES = LargeCorpus(
    "tinystories",
    RemoteFile("roneneldan/TinyStories", "TinyStoriesV2-GPT4-train.txt"),
    RemoteFile("roneneldan/TinyStories", "TinyStoriesV2-GPT4-valid.txt"),
    "<|endoftext|>",
    "CDLA-Sharing-1.0",
)
LARGE_CORPORA = {c.name: c for c in (TINYSTORIES,)}


def hub_sha256(remote: RemoteFile, timeout: float = 30) -> str:
    """The SHA-256 that the Hub's listing records for `remote` (its LFS object id)."""
    with urllib.request.urlopen(remote.listing_url(), timeout=timeout) as response:
        listing = json.load(response)
    for entry in listing:
        if entry.get("path") == remote.path and "lfs" in entry:
            return entry["lfs"]["oid"]
    raise FileNotFoundError(f"{remote.path} is not a large file of {remote.repository}")


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """`url` saved as `dest`, resuming a partial download left in dest + ".part"; the
    file is checked against `sha256` (when given) before it takes its final name."""
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except OSError as error:
        raise ConnectionError(
            f"could not download {url} ({error}); the course falls back to its "
            "offline corpus, or fetch it again when online (the download resumes)"
        ) from None
    with response:
        if response.status != 206:  # the server ignored the range: start again
            have = 0
        total = have + int(response.headers.get("Content-Length") or 0)
        bar = progress_bar(
            total or None,
            progress,
            f"downloading {dest.name}",
            "B",
            initial=have,
            unit_scale=True,
        )
        with open(part, "ab" if have else "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()
    if sha256 is not None and (actual := _sha256(part)) != sha256:
        part.unlink()
        raise ValueError(
            f"{url} arrived with SHA-256 {actual}, expected {sha256}: "
            "the partial file was deleted, fetch it again"
        )
    os.replace(part, dest)
    return dest


def stream_documents(
    path: str | os.PathLike, separator: str, block_chars: int = 1 << 22
) -> Iterator[str]:
    """The documents of a text file split by `separator`, read a block at a time:
    memory stays flat however large the file."""
    rest = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for block in iter(lambda: f.read(block_chars), ""):
            *complete, rest = (rest + block).split(separator)
            yield from (doc.strip() for doc in complete if doc.strip())
    if rest.strip():
        yield rest.strip()


def _shards(documents: Iterable[str], size: int) -> Iterator[list[str]]:
    shard: list[str] = []
    for doc in documents:
        shard.append(doc)
        if len(shard) == size:
            yield shard
            shard = []
    if shard:
        yield shard


@dataclass
class Dedup:
    """Exact deduplication over a stream: the digest of every normalised document
    seen so far (8 bytes each, so tens of millions fit in memory)."""

    seen: set[bytes]
    dropped: int = 0

    def save(self, path: Path) -> None:
        """The digests seen so far, so a resumed run can go on deduplicating."""
        digests = np.frombuffer(b"".join(sorted(self.seen)), dtype=np.uint64)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, digests)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path) -> Dedup:
        return cls({d.tobytes() for d in np.load(path)})

    def fresh(self, texts: list[str]) -> list[str]:
        kept = []
        for text in texts:
            digest = _digest(normalize_for_dedup(text), 8)
            if digest in self.seen:
                self.dropped += 1
            else:
                self.seen.add(digest)
                kept.append(text)
        return kept


_worker_tokenizer = None


def _load_tokenizer(model_path: str) -> None:
    global _worker_tokenizer
    from ..tokenizer import Tokenizer

    _worker_tokenizer = Tokenizer.load(model_path)


def _encode_shard(texts: list[str]) -> np.ndarray:
    """One shard's documents as token ids, each followed by the end-of-text id."""
    tokenizer = _worker_tokenizer
    ids = [i for doc in tokenizer.encode_batch(texts) for i in (*doc, tokenizer.eos_id)]
    return np.asarray(ids, dtype=token_dtype(len(tokenizer)))


@dataclass
class PreparedSplit:
    """What preparing one file did: its token file and what was dropped on the way."""

    tokens: Path
    documents: int
    token_count: int
    duplicates: int
    clean: CleanReport


def tokenize_stream(
    texts: Iterable[str],
    tokenizer_path: str | os.PathLike,
    out: str | os.PathLike,
    dedup: Dedup,
    shard_documents: int = 20_000,
    workers: int | None = None,
    progress: bool = True,
    clean: CleanConfig = CleanConfig(),
) -> PreparedSplit:
    """Clean, deduplicate and tokenize a stream of documents into the token file `out`
    (the format of write_tokens, so read_tokens opens it).

    Shards of `shard_documents` are encoded in `workers` processes and written to
    out.shards/ under their final names as they finish: an interrupted run, started
    again on the same stream, skips the shards on disk. The stream is still read,
    cleaned and deduplicated from the start, so `dedup` ends in the same state.
    """
    from ..tokenizer import Tokenizer

    out = Path(out)
    shard_dir = out.with_name(out.name + ".shards")
    shard_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = len(Tokenizer.load(tokenizer_path))
    dtype = token_dtype(vocab_size)
    report = CleanReport()

    def cleaned_shards() -> Iterator[tuple[Path, list[str]]]:
        for index, shard in enumerate(_shards(texts, shard_documents)):
            kept, part = clean_documents(
                [Document(str(i), "", text, "stream") for i, text in enumerate(shard)],
                clean,
            )
            report.merge(part)
            yield shard_dir / f"{index:06d}.bin", dedup.fresh([d.text for d in kept])

    bar = progress_bar(None, progress, f"tokenizing {out.name}", "shard")
    workers = workers or max(1, (os.cpu_count() or 1) - 1)
    paths, documents = _encode_in_parallel(
        cleaned_shards(), str(tokenizer_path), workers, bar
    )
    if bar is not None:
        bar.close()
    count = _concatenate(paths, out, dtype.itemsize)
    meta = {
        "dtype": dtype.name,
        "tokens": count,
        "vocab_size": vocab_size,
        "documents": documents,
    }
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(meta).encode())
    shutil.rmtree(shard_dir)
    return PreparedSplit(out, documents, count, dedup.dropped, report)


def _encode_in_parallel(
    shards: Iterable[tuple[Path, list[str]]], tokenizer_path: str, workers: int, bar
) -> tuple[list[Path], int]:
    """Encode each (path, documents) shard in a worker process and write it to its
    path, skipping the paths already on disk; at most 2 x workers shards wait in
    memory. Returns the shard paths in order and the number of documents."""
    paths, documents, pending = [], 0, []
    with ProcessPoolExecutor(
        workers, initializer=_load_tokenizer, initargs=(tokenizer_path,)
    ) as pool:
        try:
            for path, texts in shards:
                documents += len(texts)
                if not texts:
                    continue
                paths.append(path)
                if not path.exists():
                    pending.append((path, pool.submit(_encode_shard, texts)))
                while pending and (len(pending) > 2 * workers or pending[0][1].done()):
                    _write_shard(*pending.pop(0), bar)
        finally:
            # an interrupted run keeps every shard already encoded: a rerun skips it
            for path, future in pending:
                if future.exception() is None:
                    _write_shard(path, future, bar)
    for _, future in pending:
        if future.exception() is not None:
            raise future.exception()
    return paths, documents


def _write_shard(path: Path, future, bar) -> None:
    ids = future.result()
    atomic_write_bytes(path, ids.tobytes())
    if bar is not None:
        bar.update(1)


def _concatenate(shards: list[Path], out: Path, itemsize: int) -> int:
    """The shards joined into `out`; returns the number of tokens."""
    if not shards:
        raise ValueError(f"no documents survived cleaning for {out.name}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for shard in shards:
                with open(shard, "rb") as part:
                    shutil.copyfileobj(part, f)

    atomic_write(out, write)
    return sum(p.stat().st_size for p in shards) // itemsize


def fetch_large_corpus(corpus: LargeCorpus, progress: bool = True) -> tuple[Path, Path]:
    """The corpus's (train, valid) files in the cache, downloaded and checked against
    the Hub's SHA-256 first if needed. Raises ConnectionError when offline."""
    folder = cache_dir().parent / corpus.name
    paths = []
    for remote in (corpus.train, corpus.valid):
        dest = folder / remote.path
        if not dest.exists():
            if _offline():
                raise ConnectionError(
                    f"{corpus.name} is not cached and FOUNDRY_OFFLINE forbids "
                    "downloading it"
                )
            try:
                sha256 = hub_sha256(remote)
            except OSError as error:
                raise ConnectionError(
                    f"cannot reach {HUGGING_FACE} for {corpus.name} ({error})"
                ) from None
            download(remote.url, dest, sha256, progress)
        paths.append(dest)
    return paths[0], paths[1]


_resolved: dict[str, tuple[Path, Path] | None] = {}


def large_corpus_files(name: str | None) -> tuple[Path, Path] | None:
    """The (train, valid) files of the large corpus `name`, fetched on first use;
    None for no large corpus, or when it cannot be had (offline), which one printed
    line says, once per process: pretraining then reads the course corpus alone."""
    if name is None:
        return None
    if name not in LARGE_CORPORA:
        raise ValueError(
            f"unknown large corpus '{name}': choose one of {', '.join(LARGE_CORPORA)}"
        )
    if name not in _resolved:
        try:
            _resolved[name] = fetch_large_corpus(LARGE_CORPORA[name])
        except ConnectionError as error:
            _resolved[name] = None
            print(
                f"{name} cannot be had ({error}): pretraining reads the course corpus "
                "alone, many times over for a large model (chapter 4 counts the passes)"
            )
    return _resolved[name]
