"""Where each stage's artifact lives, and how it is written.

A stage's folder is artifacts/<preset>/<stage>-<key>, the key hashing every setting
that shaped the artifact and the keys of the stages it was built from: change a setting
and a new artifact is built, never a stale one reused. `stage_dir` is the one place that
says so. Each artifact is built into a temporary folder that is renamed into place only
when complete, so an interrupted build leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from ..config import TrainConfig
from ..data.stream import large_corpus_files
from ..fileio import atomic_directory
from ..presets import Preset
from ..speculative import draft_config


def artifacts_root() -> Path:
    """$FOUNDRY_ARTIFACTS, else artifacts/ at the root of this clone (git-ignored)."""
    if os.environ.get("FOUNDRY_ARTIFACTS"):
        return Path(os.environ["FOUNDRY_ARTIFACTS"])
    return Path(__file__).resolve().parents[2] / "artifacts"


def _key(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def _build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Run `build` into a temporary sibling of `folder` and rename it into place, unless
    it exists."""
    if not folder.exists():
        with atomic_directory(folder) as tmp:
            build(tmp)
    return folder


def corpus_key(preset: Preset) -> dict:
    """The course corpus's settings (the large corpus, if any, joins at the tokenizer:
    the corpus stage never reads it)."""
    settings = asdict(preset.data)
    settings.pop("large_corpus")
    return {"stage": "corpus", **settings}


def tokenizer_key(preset: Preset) -> dict:
    key = {
        "stage": "tokenizer",
        "vocab_size": preset.model.vocab_size,
        "corpus": _key(corpus_key(preset)),
    }
    if large_corpus_files(preset.data.large_corpus) is not None:
        key["large_corpus"] = preset.data.large_corpus
    return key


def tokens_key(preset: Preset) -> dict:
    return {"stage": "tokens", "tokenizer": _key(tokenizer_key(preset))}


def pretrained_key(preset: Preset) -> dict:
    return {
        "stage": "pretrained",
        "tokens": _key(tokens_key(preset)),
        "model": preset.model.to_dict(),
        "train": preset.train.to_dict(),
    }


# The settings every RL stage depends on
RL_FIELDS = ("group_size", "rl_epochs", "rl_minibatches", "clip", "rl_temperature")
# What each post-training stage's artifact depends on, beyond the task data every one of
# them shares.
_ALIGN_FIELDS = {
    "sft": ("sft",),
    "lora": ("lora", "lora_rank", "lora_alpha"),
    "qlora": ("lora", "lora_rank", "lora_alpha"),
    "reward": ("sft", "reward"),
    "dpo-data": ("sft", "on_policy_prompts", "samples", "offline_pairs"),
    "dpo": (
        "sft",
        "dpo",
        "on_policy_prompts",
        "samples",
        "offline_pairs",
        "nll_weight",
    ),
    "grpo": ("sft", "grpo", *RL_FIELDS, "grpo_kl"),
    "ppo": ("sft", "reward", "ppo", *RL_FIELDS),
}


# Bump when a change to distill.py (its defaults included) changes the draft it makes.
DISTILL_VERSION = 1


def draft_preset(preset: Preset) -> Preset:
    """The preset's recipe with the draft model of speculative decoding in place of its
    own (speculative.draft_config): how the draft is trained and where it is cached."""
    return replace(preset, model=draft_config(preset.model))


def distilled_draft_key(preset: Preset) -> dict:
    # the pretrained key holds the seed, which the distillation also uses
    return {
        "stage": "distilled-draft",
        "version": DISTILL_VERSION,
        "model": stage_dir("pretrained", preset).name,
        "draft": stage_dir("pretrained", draft_preset(preset)).name,
    }


def quantized_key(preset: Preset) -> dict:
    return {
        "stage": "quantized",
        "version": DEPLOY_VERSION,
        "dpo": stage_dir("dpo", preset).name,
        **preset.quantize.to_dict(),
    }


def export_key(preset: Preset) -> dict:
    return {
        "stage": "export",
        "version": DEPLOY_VERSION,
        "dpo": stage_dir("dpo", preset).name,
    }


# Bump when a change to the quantization or export code changes the files they write.
DEPLOY_VERSION = 2  # 2: the export folder holds the tokenizer files (issue 22)


def stage_dir(stage: str, preset: Preset) -> Path:
    """The one place that says where a stage's artifact lives:
    artifacts/<preset>/<stage>-<key>, the key hashing every setting that shaped it and
    the keys of the stages it was built from."""
    keys = {
        "corpus": corpus_key,
        "tokenizer": tokenizer_key,
        "tokens": tokens_key,
        "pretrained": pretrained_key,
        "distilled-draft": distilled_draft_key,
        "quantized": quantized_key,
        "export": export_key,
    }
    if stage in keys:
        name = f"{stage}-{_key(keys[stage](preset))}"
    elif stage in _ALIGN_FIELDS:
        name = f"{stage}-{_align_key(preset, stage, *_ALIGN_FIELDS[stage])}"
        if stage == "dpo":
            name += f"-beta{preset.align.beta:g}"
        if stage == "ppo":
            name += f"-kl{preset.align.ppo_kl:g}"
        if stage == "qlora":  # the int4 base depends on the group sizes on offer
            name += "-g" + "-".join(map(str, preset.quantize.group_sizes))
    else:
        raise ValueError(
            f"stage '{stage}' has no folder: "
            f"choose one of {', '.join([*keys, *_ALIGN_FIELDS])}"
        )
    return artifacts_root() / preset.name / name


# Post-training artifacts are keyed by their settings; bump this when a change to the
# task, template or pair-making code changes what a stage builds, so no stale artifact
# is reused.
ALIGN_VERSION = 1


def _align_key(preset: Preset, stage: str, *fields: str) -> str:
    settings = preset.align
    values = {
        f: getattr(settings, f)
        for f in (
            "train_per_task",
            "test_per_task",
            "held_out",
            "template",
            "seed",
            "max_new_tokens",
            *fields,
        )
    }
    values = {
        k: v.to_dict() if isinstance(v, TrainConfig) else v for k, v in values.items()
    }
    return _key(
        {
            "stage": stage,
            "version": ALIGN_VERSION,
            "pretrained": stage_dir("pretrained", preset).name,
            **values,
        }
    )


def pretrained_dir(preset: Preset) -> Path:
    return stage_dir("pretrained", preset)
