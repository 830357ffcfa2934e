"""What `ensure(stage, preset)` returns: one type per stage, each able to say what it
holds.

The results are named tuples, so the chapters can unpack them as before
(`model, history = ensure("sft", preset)`) or name their parts
(`ensure("tokens", preset).validation`). `summary()` is the few numbers that tell a
reader what a built stage holds; the CLI's `run` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ..data import Document, read_tokens

SHOWN = ("step", "loss", "val_loss", "val_accuracy", "val_margin")


class Corpus(NamedTuple):
    """The cleaned, deduplicated corpus, split by document (chapter 1)."""

    train: list[Document]
    validation: list[Document]

    def summary(self) -> dict:
        return {
            "train documents": len(self.train),
            "validation documents": len(self.validation),
        }


class TokenFiles(NamedTuple):
    """The token files of both splits, documents separated by the end-of-text id."""

    train: Path
    validation: Path

    def summary(self) -> dict:
        return {
            "train tokens": len(read_tokens(self.train)),
            "validation tokens": len(read_tokens(self.validation)),
        }


class TrainedStage(NamedTuple):
    """A trained stage's model and its history (one record per step)."""

    model: torch.nn.Module
    history: list[dict]

    def summary(self) -> dict:
        """The last record's step, losses and (for reward and DPO) held-out
        accuracy and margin."""
        last = self.history[-1] if self.history else {}
        return {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in last.items()
            if key in SHOWN
        }
