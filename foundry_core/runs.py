"""Run folders that describe themselves: which stage made them, from which recipe, with
which tokenizer.

Every trained stage (pretraining, SFT, reward model, DPO, from a chapter or from the
command line) leaves a folder of checkpoints. Beside them, `run.json` says what the
folder holds and `tokenizer.model` is the tokenizer its token ids mean.
`load_run(folder)` rebuilds the model from the folder alone, with the configuration
saved in the checkpoint: no preset to pass, nothing to guess, and a folder written by
another version of this format is refused with a message instead of loaded wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .align.reward import RewardModel
from .align.rl import PolicyWithValue
from .checkpoint import STATE, latest_checkpoint, read_checkpoint
from .config import ModelConfig
from .fileio import atomic_write_bytes
from .model import Transformer
from .presets import Preset
from .tokenizer import Tokenizer

# Bump when what a run folder holds changes; older folders are then refused clearly.
RUN_FORMAT = 1
INFO, TOKENIZER = "run.json", "tokenizer.model"


@dataclass(frozen=True)
class Run:
    """A loaded run: the model at its newest (or chosen) checkpoint, its tokenizer and
    what made it."""

    model: nn.Module
    tokenizer: Tokenizer
    info: dict  # format, stage, preset, recipe, foundry_core version
    checkpoint: Path
    history: list[dict]


def recipe(preset: Preset) -> dict:
    """Every setting of a preset, as plain data (what run.json records)."""
    return {
        "name": preset.name,
        "model": preset.model.to_dict(),
        "train": preset.train.to_dict(),
        "data": asdict(preset.data),
        "align": preset.align.to_dict(),
        "evaluation": preset.evaluation.to_dict(),
    }


def describe_run(
    folder: str | Path, stage: str, preset: Preset, tokenizer: Tokenizer
) -> None:
    """Write run.json and tokenizer.model into `folder` (atomically each)."""
    folder = Path(folder)
    from . import __version__

    info = {
        "format": RUN_FORMAT,
        "stage": stage,
        "preset": preset.name,
        "foundry_core": __version__,
        "recipe": recipe(preset),
    }
    tokenizer.save(folder / TOKENIZER)
    atomic_write_bytes(folder / INFO, (json.dumps(info, indent=1) + "\n").encode())


def is_described(folder: str | Path) -> bool:
    return (Path(folder) / INFO).is_file() and (Path(folder) / TOKENIZER).is_file()


def load_run(path: str | Path) -> Run:
    """The model, tokenizer and description of a run folder (its newest checkpoint) or
    of one checkpoint."""
    path = Path(path)
    checkpoint = path if (path / STATE).is_file() else latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(
            f"no checkpoint in {path}: "
            "train one with `python -m foundry_core run pretrain`"
        )
    folder = checkpoint.parent
    info = _read_info(folder)
    try:
        weights, state = read_checkpoint(checkpoint)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001
        # a truncated or overwritten file: say which, not where in torch
        raise ValueError(
            f"{checkpoint} is damaged and cannot be read "
            f"({type(err).__name__}: {err}); "
            f"load an earlier checkpoint of {folder}, or rebuild the stage"
        ) from None
    config = ModelConfig.from_dict(state["model_config"])
    builders = {"reward": lambda: RewardModel(Transformer(config))}
    builders["ppo"] = lambda: PolicyWithValue(config)  # the policy, with its critic
    model = builders.get(info["stage"], lambda: Transformer(config))()
    model.load_weights(weights, source=str(checkpoint))
    tokenizer = Tokenizer.load(folder / TOKENIZER)
    tokenizer.check_compatible(config.vocab_size)
    return Run(model.eval(), tokenizer, info, checkpoint, list(state["history"]))


def _read_info(folder: Path) -> dict:
    if not is_described(folder):
        raise ValueError(
            f"{folder} has no {INFO} and {TOKENIZER}: it was written by an older "
            "foundry_core, before run folders described themselves. Delete it and "
            "build the stage again "
            "(`python -m foundry_core run <stage> --preset <name>`)"
        )
    try:
        info = json.loads((folder / INFO).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{folder / INFO} is damaged ({err}): "
            "delete the folder and build the stage again"
        ) from None
    if info.get("format") != RUN_FORMAT:
        raise ValueError(
            f"{folder} holds a run in format {info.get('format')!r}, "
            f"written by foundry_core {info.get('foundry_core', '?')}; "
            f"this one reads format {RUN_FORMAT}: "
            "build the stage again with this version"
        )
    return info
