"""The hand-off between chapters: each stage's artifact, built on demand and cached.

Every chapter runs on its own in a fresh kernel. When chapter 4 needs the tokenized
corpus, `ensure("tokens", preset)` returns it, building whatever is missing with the
same functions chapters 1 and 2 teach. Where each artifact lives, and how it is written
so that an interrupted build leaves nothing half-written, is in store.py; the stages
themselves are in data_stages.py, pretrain.py and align_stages.py.
"""

from __future__ import annotations

from ..data import read_tokens
from ..presets import Preset, pick_preset
from .align_stages import (
    dpo_pairs,
    ensure_dpo,
    ensure_reward,
    ensure_sft,
    ensure_tasks,
    preference_data,
)
from .data_stages import ensure_corpus, ensure_tokenizer, ensure_tokens
from .pretrain import (
    PRETRAIN_CHECKPOINTS,
    ensure_pretrained,
    finish_pretraining,
    pretrain_trainer,
    publish_pretrained,
)
from .store import (
    ALIGN_VERSION,
    artifacts_root,
    corpus_key,
    pretrained_dir,
    pretrained_key,
    stage_dir,
    tokenizer_key,
    tokens_key,
)

__all__ = [
    "ALIGN_VERSION",
    "PRETRAIN_CHECKPOINTS",
    "STAGES",
    "TRAINED",
    "artifacts_root",
    "corpus_key",
    "dpo_pairs",
    "ensure",
    "ensure_corpus",
    "ensure_dpo",
    "ensure_pretrained",
    "ensure_reward",
    "ensure_sft",
    "ensure_tasks",
    "ensure_tokenizer",
    "ensure_tokens",
    "finish_pretraining",
    "preference_data",
    "pretrain_trainer",
    "pretrained_dir",
    "pretrained_key",
    "publish_pretrained",
    "stage_dir",
    "stage_summary",
    "tokenizer_key",
    "tokens_key",
]

STAGES = (
    "corpus",
    "tokenizer",
    "tokens",
    "pretrained",
    "tasks",
    "sft",
    "reward",
    "dpo",
)

TRAINED = ("pretrained", "sft", "reward", "dpo")  # the stages that run a Trainer


def ensure(stage: str, preset: Preset | None = None, progress: bool = False):
    """The artifact of `stage` for `preset` (default: the preset picked for this
    machine); `progress` shows a progress bar while a trained stage builds."""
    preset = preset or pick_preset()
    builders = {
        "corpus": ensure_corpus,
        "tokenizer": ensure_tokenizer,
        "tokens": ensure_tokens,
        "pretrained": ensure_pretrained,
        "tasks": ensure_tasks,
        "sft": ensure_sft,
        "reward": ensure_reward,
        "dpo": ensure_dpo,
    }
    if stage not in builders:
        raise ValueError(f"unknown stage '{stage}': choose one of {', '.join(STAGES)}")
    if stage in TRAINED:
        return builders[stage](preset, progress=progress)
    return builders[stage](preset)


def stage_summary(stage: str, preset: Preset, result) -> dict:
    """What a built stage holds, in a few numbers (`ensure`'s result for `stage`)."""
    summary: dict = {"stage": stage}
    if stage != "tasks":
        summary["folder"] = str(stage_dir(stage, preset))
    if stage in TRAINED:
        last = result[1][-1] if result[1] else {}
        shown = ("step", "loss", "val_loss", "val_accuracy", "val_margin")
        for key in shown:
            if key in last:
                value = last[key]
                summary[key] = round(value, 4) if isinstance(value, float) else value
    elif stage == "corpus":
        summary["train documents"] = len(result[0])
        summary["validation documents"] = len(result[1])
    elif stage == "tokenizer":
        summary["vocabulary"] = len(result)
    elif stage == "tokens":
        summary["train tokens"] = len(read_tokens(result[0]))
        summary["validation tokens"] = len(read_tokens(result[1]))
    elif stage == "tasks":
        summary["train"] = len(result.train)
        summary["held out"] = len(result.test)
        summary["plays"] = len(result.plays)
    return summary
