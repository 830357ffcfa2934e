"""Pretraining as a stage (chapter 4), and the helpers every trained stage shares.

The chapters (`ensure_pretrained`) and the command line (`python -m foundry_core
pretrain`, under torchrun too) start from the same `pretrain_trainer`, so the same
recipe gives the same model whichever way it was trained.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from ..config import TrainConfig
from ..data import read_tokens
from ..distill import distill_draft
from ..hardware import detect
from ..model import Transformer
from ..presets import Preset, known_peak_tflops
from ..runs import INFO, TOKENIZER, describe_run, is_described, load_run
from ..train import Trainer
from .data_stages import ensure_tokenizer, ensure_tokens
from .results import TrainedStage
from .store import _build_once, draft_preset, pretrained_dir, stage_dir

# evenly spaced checkpoints kept by a pretraining run (chapter 4 loads each)
PRETRAIN_CHECKPOINTS = 4


def pretrain_trainer(preset: Preset, out_dir: Path, **trainer_kwargs) -> Trainer:
    """The Trainer of the preset's pretraining run, checkpointing into `out_dir`.

    The chapters (ensure_pretrained) and the command line (`python -m foundry_core
    pretrain`, also under torchrun) both start here, so the same recipe gives the same
    model whichever way it was trained.
    """
    train_path, val_path = ensure_tokens(preset)
    torch.manual_seed(preset.train.seed)
    trainer_kwargs.setdefault(
        "checkpoint_interval", max(1, preset.train.max_steps // PRETRAIN_CHECKPOINTS)
    )
    info = trainer_kwargs.setdefault("hardware", detect())
    # with a known peak, the Trainer records MFU
    trainer_kwargs.setdefault("peak_tflops", known_peak_tflops(preset, info))
    return Trainer(
        Transformer(preset.model),
        preset.train,
        read_tokens(train_path),
        read_tokens(val_path),
        out_dir=out_dir,
        keep_checkpoints=PRETRAIN_CHECKPOINTS,
        **trainer_kwargs,
    )


def finish_pretraining(trainer: Trainer) -> Path:
    """Save the last step unless the checkpoint plan just did; return its checkpoint.
    Decided from the step alone, so every rank of a torchrun job takes the same branch
    (save() is collective)."""
    if trainer.step % trainer.checkpoint_interval:
        return trainer.save()
    return checkpoint_dir(trainer.out_dir, trainer.step)


def publish_pretrained(preset: Preset, run_dir: Path) -> Path | None:
    """Make a finished pretraining run from the command line the one chapters load.

    Copied into artifacts/<preset>/pretrained-<key> like any built stage (atomically,
    never over an existing one). Only a run that reached the recipe's max_steps is
    published: a shorter run is not the recipe's model.
    """
    if latest_checkpoint(run_dir) != checkpoint_dir(run_dir, preset.train.max_steps):
        return None

    def build(tmp: Path) -> None:
        for checkpoint in list_checkpoints(run_dir):
            shutil.copytree(checkpoint, tmp / checkpoint.name)
        for name in ("history.jsonl", INFO, TOKENIZER):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)

    return _build_once(pretrained_dir(preset), build)


def ensure_pretrained(
    preset: Preset, callbacks: tuple = (), progress: bool = False
) -> TrainedStage:
    """The pretrained model and its history; trains it (chapter 4) if not there yet.

    Training writes PRETRAIN_CHECKPOINTS evenly spaced checkpoints into the run folder,
    which is renamed into place only when the run has finished, so a half-trained model
    is never taken for a finished one.
    """
    folder = pretrained_dir(preset)

    def build(tmp: Path) -> None:
        describe_run(tmp, "pretrained", preset, ensure_tokenizer(preset))
        trainer = pretrain_trainer(preset, tmp, callbacks=callbacks, progress=progress)
        trainer.fit()
        finish_pretraining(trainer)

    _build_once(folder, build)
    return _load_stage("pretrained", preset)


def ensure_draft(preset: Preset, progress: bool = False) -> TrainedStage:
    """The draft model of speculative decoding (chapter 5): the preset's pretraining
    recipe, tokenizer and token files, with the small model of
    `speculative.draft_config`. Cached like the pretrained model, under its own key."""
    return ensure_pretrained(draft_preset(preset), progress=progress)


def ensure_distilled_draft(preset: Preset) -> TrainedStage:
    """The draft of `ensure_draft`, distilled on the pretrained model's own greedy
    continuations of the training text (distill.py): a draft that guesses what the
    model will say, for speculative decoding (chapter 5). Cached like any stage."""

    def build(tmp: Path) -> None:
        model = ensure_pretrained(preset).model
        draft = ensure_draft(preset).model
        tokens = read_tokens(ensure_tokens(preset).train)
        student, history = distill_draft(model, draft, tokens, seed=preset.train.seed)
        tokenizer = ensure_tokenizer(preset)
        describe_run(tmp, "distilled-draft", draft_preset(preset), tokenizer)
        state = {"model_config": student.config.to_dict(), "history": history}
        save_checkpoint(tmp, len(history), student, state, keep=1)

    _build_once(stage_dir("distilled-draft", preset), build)
    return _load_stage("distilled-draft", preset)


def _train_stage(
    stage: str,
    preset: Preset,
    model: torch.nn.Module,
    config: TrainConfig,
    train,
    val,
    callbacks,
    progress: bool,
    **trainer_kwargs,
) -> None:
    build_trained_stage(
        stage,
        preset,
        config.seed,
        lambda **run: Trainer(
            model,
            config,
            train,
            val,
            callbacks=callbacks,
            progress=progress,
            **trainer_kwargs,
            **run,
        ),
    )


def build_trained_stage(
    stage: str, preset: Preset, seed: int, make_trainer: Callable[..., Trainer]
) -> None:
    """Train a post-training stage into its folder, once: describe the run, seed,
    fit, save the last checkpoint. `make_trainer(out_dir=, keep_checkpoints=)` builds
    the Trainer (or a subclass, e.g. RLTrainer)."""

    def build(tmp: Path) -> None:
        describe_run(tmp, stage, preset, ensure_tokenizer(preset))
        torch.manual_seed(seed)
        trainer = make_trainer(out_dir=tmp, keep_checkpoints=1)
        trainer.fit()
        trainer.save()

    _build_once(stage_dir(stage, preset), build)


def _load_stage(stage: str, preset: Preset) -> TrainedStage:
    """A built stage's model (from the configuration saved with it) and its training
    history."""
    folder = stage_dir(stage, preset)
    # built before run folders described themselves: same key, same content
    if not is_described(folder):
        describe_run(folder, stage, preset, ensure_tokenizer(preset))
    run = load_run(folder)
    return TrainedStage(run.model, run.history)
