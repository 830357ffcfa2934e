"""The hand-off between chapters: each stage's artifact, built on demand and cached.

Every chapter runs on its own in a fresh kernel. When chapter 4 needs the tokenized corpus,
`ensure("tokens", preset)` returns it, building whatever is missing with the same functions chapters 1
and 2 teach. Artifacts live under artifacts/<preset>/<stage>-<key>/, where the key hashes every setting
that shaped them (and the keys of the stages before): change a setting and a new artifact is built,
never a stale one reused. Each stage writes into a temporary folder renamed when complete, so an
interrupted build leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import latest_checkpoint, load_checkpoint
from .data import Document, clean_documents, load_corpus, read_tokens, split_documents, write_tokens
from .data.dedup import exact_dedup, minhash_dedup
from .fileio import atomic_directory
from .presets import Preset, pick_preset
from .model import Transformer
from .tokenizer import Tokenizer, train_tokenizer
from .train import Trainer

STAGES = ("corpus", "tokenizer", "tokens", "pretrained")


@dataclass(frozen=True)
class DataSettings:
    """What the data stages do; a preset's data is fully described by these and its vocab size."""

    corpus: str = "shakespeare"
    max_documents: int | None = None  # the `ci` preset keeps a few plays so tests stay fast
    val_fraction: float = 0.1
    seed: int = 0
    shingle_words: int = 5  # near-duplicate detection within the training corpus
    near_dup_threshold: float = 0.5


def data_settings(preset: Preset) -> DataSettings:
    return DataSettings(max_documents=8, val_fraction=0.25) if preset.name == "ci" else DataSettings()


def artifacts_root() -> Path:
    """$FOUNDRY_ARTIFACTS, else artifacts/ at the root of this clone (git-ignored)."""
    if os.environ.get("FOUNDRY_ARTIFACTS"):
        return Path(os.environ["FOUNDRY_ARTIFACTS"])
    return Path(__file__).resolve().parents[1] / "artifacts"


def _key(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def _build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Run `build` into a temporary sibling of `folder` and rename it into place, unless it exists."""
    if not folder.exists():
        with atomic_directory(folder) as tmp:
            build(tmp)
    return folder


def _save_documents(documents: list[Document], path: Path) -> None:
    path.write_text("".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in documents))


def _load_documents(path: Path) -> list[Document]:
    return [Document(**json.loads(line)) for line in path.read_text().splitlines()]


def corpus_key(preset: Preset) -> dict:
    return {"stage": "corpus", **asdict(data_settings(preset))}


def ensure_corpus(preset: Preset) -> tuple[list[Document], list[Document]]:
    """Load, clean, remove exact and near duplicates, split by document: (train, validation)."""
    settings = data_settings(preset)
    folder = artifacts_root() / preset.name / f"corpus-{_key(corpus_key(preset))}"

    def build(tmp: Path) -> None:
        documents = load_corpus(settings.corpus)[: settings.max_documents]
        documents, report = clean_documents(documents)
        keep, _ = exact_dedup([d.text for d in documents])
        documents = [documents[i] for i in keep]
        keep, _ = minhash_dedup([d.text for d in documents], k=settings.shingle_words,
                                threshold=settings.near_dup_threshold, seed=settings.seed)
        documents = [documents[i] for i in keep]
        train, val = split_documents(documents, settings.val_fraction, settings.seed)
        _save_documents(train, tmp / "train.jsonl")
        _save_documents(val, tmp / "val.jsonl")
        (tmp / "report.json").write_text(json.dumps({"lines_removed": report.lines_removed,
                                                     "docs_removed": report.docs_removed}))

    _build_once(folder, build)
    return _load_documents(folder / "train.jsonl"), _load_documents(folder / "val.jsonl")


def tokenizer_key(preset: Preset) -> dict:
    return {"stage": "tokenizer", "vocab_size": preset.model.vocab_size, "corpus": _key(corpus_key(preset))}


def ensure_tokenizer(preset: Preset) -> Tokenizer:
    """A SentencePiece BPE tokenizer with the preset's vocabulary size, trained on the training split."""
    folder = artifacts_root() / preset.name / f"tokenizer-{_key(tokenizer_key(preset))}"

    def build(tmp: Path) -> None:
        train, _ = ensure_corpus(preset)
        train_tokenizer([d.text for d in train], preset.model.vocab_size, tmp)

    _build_once(folder, build)
    tokenizer = Tokenizer.load(folder / "tokenizer.model")
    tokenizer.check_compatible(preset.model.vocab_size)
    return tokenizer


def ensure_tokens(preset: Preset) -> tuple[Path, Path]:
    """Paths of the train and validation token files (documents separated by the end-of-text id)."""
    key = {"stage": "tokens", "tokenizer": _key(tokenizer_key(preset))}
    folder = artifacts_root() / preset.name / f"tokens-{_key(key)}"

    def build(tmp: Path) -> None:
        tokenizer = ensure_tokenizer(preset)
        train, val = ensure_corpus(preset)
        for name, documents in (("train", train), ("val", val)):
            write_tokens(documents, tokenizer.encode, tmp / f"{name}.bin", len(tokenizer), tokenizer.eos_id)

    _build_once(folder, build)
    return folder / "train.bin", folder / "val.bin"


def pretrained_dir(preset: Preset) -> Path:
    key = {"stage": "pretrained", "tokens": _key({"stage": "tokens", "tokenizer": _key(tokenizer_key(preset))}),
           "model": preset.model.to_dict(), "train": preset.train.to_dict()}
    return artifacts_root() / preset.name / f"pretrained-{_key(key)}"


def ensure_pretrained(preset: Preset, callbacks: tuple = (), progress: bool = False,
                      checkpoints: int = 4) -> tuple[Transformer, list[dict]]:
    """The pretrained model and its training history; trains it (chapter 4) if it is not there yet.

    Training writes `checkpoints` evenly spaced checkpoints into the run folder, which is renamed into
    place only when the run has finished, so a half-trained model is never taken for a finished one.
    """
    folder = pretrained_dir(preset)

    def build(tmp: Path) -> None:
        train_path, val_path = ensure_tokens(preset)
        torch.manual_seed(preset.train.seed)
        interval = max(1, preset.train.max_steps // checkpoints)
        trainer = Trainer(Transformer(preset.model), preset.train, read_tokens(train_path), read_tokens(val_path),
                          out_dir=tmp, checkpoint_interval=interval, keep_checkpoints=checkpoints,
                          callbacks=callbacks, progress=progress)
        trainer.fit()
        if trainer.step % interval:
            trainer.save()

    _build_once(folder, build)
    model = Transformer(preset.model)
    state = load_checkpoint(latest_checkpoint(folder), model)
    return model.eval(), list(state["history"])


def ensure(stage: str, preset: Preset | None = None):
    """The artifact of `stage` for `preset` (default: the preset picked for this machine)."""
    preset = preset or pick_preset()
    builders = {"corpus": ensure_corpus, "tokenizer": ensure_tokenizer, "tokens": ensure_tokens,
                "pretrained": ensure_pretrained}
    if stage not in builders:
        raise ValueError(f"unknown stage '{stage}': choose one of {', '.join(STAGES)}")
    return builders[stage](preset)
