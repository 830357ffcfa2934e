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
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch

from .align import (
    ChatDataset,
    PairDataset,
    PreferencePair,
    RewardModel,
    TaskSplits,
    add_reference_logprobs,
    build_tasks,
    encode_chat,
    example_chat,
    make_dpo_loss,
    on_policy_pairs,
    preference_pairs,
    reward_loss,
)
from .checkpoint import checkpoint_dir, latest_checkpoint, list_checkpoints
from .config import TrainConfig
from .data import (
    Document,
    clean_documents,
    load_corpus,
    read_tokens,
    split_documents,
    write_tokens,
)
from .data.dedup import exact_dedup, minhash_dedup
from .fileio import atomic_directory
from .hardware import detect
from .model import Transformer
from .presets import Preset, known_peak_tflops, pick_preset
from .runs import INFO, TOKENIZER, describe_run, is_described, load_run
from .tokenizer import Tokenizer, train_tokenizer
from .train import Trainer

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
    path.write_text(
        "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in documents)
    )


def _load_documents(path: Path) -> list[Document]:
    return [Document(**json.loads(line)) for line in path.read_text().splitlines()]


def corpus_key(preset: Preset) -> dict:
    return {"stage": "corpus", **asdict(preset.data)}


def ensure_corpus(preset: Preset) -> tuple[list[Document], list[Document]]:
    """Load, clean, remove exact and near duplicates, split by document: (train, validation)."""
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
    return _load_documents(folder / "train.jsonl"), _load_documents(
        folder / "val.jsonl"
    )


def tokenizer_key(preset: Preset) -> dict:
    return {
        "stage": "tokenizer",
        "vocab_size": preset.model.vocab_size,
        "corpus": _key(corpus_key(preset)),
    }


def ensure_tokenizer(preset: Preset) -> Tokenizer:
    """A SentencePiece BPE tokenizer with the preset's vocabulary size, trained on the training split."""
    folder = stage_dir("tokenizer", preset)

    def build(tmp: Path) -> None:
        train, _ = ensure_corpus(preset)
        train_tokenizer([d.text for d in train], preset.model.vocab_size, tmp)

    _build_once(folder, build)
    tokenizer = Tokenizer.load(folder / "tokenizer.model")
    tokenizer.check_compatible(preset.model.vocab_size)
    return tokenizer


def tokens_key(preset: Preset) -> dict:
    return {"stage": "tokens", "tokenizer": _key(tokenizer_key(preset))}


def ensure_tokens(preset: Preset) -> tuple[Path, Path]:
    """Paths of the train and validation token files (documents separated by the end-of-text id)."""
    folder = stage_dir("tokens", preset)

    def build(tmp: Path) -> None:
        tokenizer = ensure_tokenizer(preset)
        train, val = ensure_corpus(preset)
        for name, documents in (("train", train), ("val", val)):
            write_tokens(
                documents,
                tokenizer.encode,
                tmp / f"{name}.bin",
                len(tokenizer),
                tokenizer.eos_id,
            )

    _build_once(folder, build)
    return folder / "train.bin", folder / "val.bin"


def pretrained_key(preset: Preset) -> dict:
    return {
        "stage": "pretrained",
        "tokens": _key(tokens_key(preset)),
        "model": preset.model.to_dict(),
        "train": preset.train.to_dict(),
    }


def pretrained_dir(preset: Preset) -> Path:
    return stage_dir("pretrained", preset)


PRETRAIN_CHECKPOINTS = (
    4  # evenly spaced checkpoints kept by a pretraining run (chapter 4 loads each)
)


def pretrain_trainer(preset: Preset, out_dir: Path, **trainer_kwargs) -> Trainer:
    """The Trainer of the preset's pretraining run, writing its checkpoints into `out_dir`.

    The chapters (ensure_pretrained) and the command line (`python -m foundry_core pretrain`, also under
    torchrun) both start here, so the same recipe gives the same model whichever way it was trained.
    """
    train_path, val_path = ensure_tokens(preset)
    torch.manual_seed(preset.train.seed)
    trainer_kwargs.setdefault(
        "checkpoint_interval", max(1, preset.train.max_steps // PRETRAIN_CHECKPOINTS)
    )
    info = trainer_kwargs.setdefault("hardware", detect())
    trainer_kwargs.setdefault(
        "peak_tflops", known_peak_tflops(preset, info)
    )  # then MFU is recorded
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
    """Save the last step unless the checkpoint plan just did; return its checkpoint. Decided from the step
    alone, so every rank of a torchrun job takes the same branch (save() is collective)."""
    if trainer.step % trainer.checkpoint_interval:
        return trainer.save()
    return checkpoint_dir(trainer.out_dir, trainer.step)


def publish_pretrained(preset: Preset, run_dir: Path) -> Path | None:
    """Make a finished pretraining run (from the command line) the one the chapters load.

    Copied into artifacts/<preset>/pretrained-<key> like any built stage (atomically, never over an
    existing one). Only a run that reached the recipe's max_steps is published: a shorter run is not
    the recipe's model.
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
) -> tuple[Transformer, list[dict]]:
    """The pretrained model and its training history; trains it (chapter 4) if it is not there yet.

    Training writes PRETRAIN_CHECKPOINTS evenly spaced checkpoints into the run folder, which is renamed
    into place only when the run has finished, so a half-trained model is never taken for a finished one.
    """
    folder = pretrained_dir(preset)

    def build(tmp: Path) -> None:
        describe_run(tmp, "pretrained", preset, ensure_tokenizer(preset))
        trainer = pretrain_trainer(preset, tmp, callbacks=callbacks, progress=progress)
        trainer.fit()
        finish_pretraining(trainer)

    _build_once(folder, build)
    return _load_stage("pretrained", preset)


# ---------------------------------------------------------------------------------------- post-training


# What each post-training stage's artifact depends on, beyond the task data every one of them shares.
_ALIGN_FIELDS = {
    "sft": ("sft",),
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
}


def stage_dir(stage: str, preset: Preset) -> Path:
    """The one place that says where a stage's artifact lives: artifacts/<preset>/<stage>-<key>, the key
    hashing every setting that shaped it and the keys of the stages it was built from."""
    keys = {
        "corpus": corpus_key,
        "tokenizer": tokenizer_key,
        "tokens": tokens_key,
        "pretrained": pretrained_key,
    }
    if stage in keys:
        name = f"{stage}-{_key(keys[stage](preset))}"
    elif stage in _ALIGN_FIELDS:
        name = f"{stage}-{_align_key(preset, stage, *_ALIGN_FIELDS[stage])}"
        if stage == "dpo":
            name += f"-beta{preset.align.beta:g}"
    else:
        raise ValueError(
            f"stage '{stage}' has no folder: choose one of {', '.join([*keys, *_ALIGN_FIELDS])}"
        )
    return artifacts_root() / preset.name / name


# Post-training artifacts are keyed by their settings; bump this when a change to the task, template or
# pair-making code changes what a stage builds, so no stale artifact is reused.
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
            "pretrained": pretrained_dir(preset).name,
            **values,
        }
    )


def ensure_tasks(preset: Preset) -> TaskSplits:
    """Train and held-out instruction examples from the preset's corpus, keeping only those whose chat
    (with room for a full answer) fits the model's context."""
    settings = preset.align
    train_docs, val_docs = ensure_corpus(preset)
    tokenizer = ensure_tokenizer(preset)
    splits = build_tasks(
        train_docs + val_docs,
        settings.train_per_task,
        settings.test_per_task,
        settings.held_out,
        settings.seed,
    )
    room = preset.model.max_seq_len - settings.max_new_tokens

    def fits(example) -> bool:
        return (
            len(encode_chat(tokenizer, example_chat(example), settings.template)[0])
            <= room
        )

    return TaskSplits(
        [e for e in splits.train if fits(e)],
        [e for e in splits.test if fits(e)],
        splits.plays,
    )


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
    folder = stage_dir(stage, preset)

    def build(tmp: Path) -> None:
        describe_run(tmp, stage, preset, ensure_tokenizer(preset))
        torch.manual_seed(config.seed)
        trainer = Trainer(
            model,
            config,
            train,
            val,
            out_dir=tmp,
            keep_checkpoints=1,
            callbacks=callbacks,
            progress=progress,
            **trainer_kwargs,
        )
        trainer.fit()
        trainer.save()

    _build_once(folder, build)


def _load_stage(stage: str, preset: Preset) -> tuple[torch.nn.Module, list[dict]]:
    """A built stage's model (from the configuration saved with it) and its training history."""
    folder = stage_dir(stage, preset)
    if not is_described(
        folder
    ):  # built before run folders described themselves: same key, same content
        describe_run(folder, stage, preset, ensure_tokenizer(preset))
    run = load_run(folder)
    return run.model, run.history


def ensure_sft(
    preset: Preset, callbacks: tuple = (), progress: bool = False
) -> tuple[Transformer, list[dict]]:
    """The pretrained model fine-tuned on the instruction tasks (chapter 6), and its history."""
    settings = preset.align
    folder = stage_dir("sft", preset)
    if not folder.exists():
        tokenizer, tasks = ensure_tokenizer(preset), ensure_tasks(preset)
        model, _ = ensure_pretrained(preset)
        max_len = preset.model.max_seq_len
        train = ChatDataset(
            tokenizer,
            [example_chat(e) for e in tasks.train],
            max_len,
            settings.template,
        )
        val = ChatDataset(
            tokenizer, [example_chat(e) for e in tasks.test], max_len, settings.template
        )
        _train_stage(
            "sft", preset, model, settings.sft, train, val, callbacks, progress
        )
    return _load_stage("sft", preset)


def preference_data(preset: Preset) -> tuple[list, list]:
    """(train, held-out) preference pairs: the reference answer against a realistic wrong one."""
    settings, tasks = preset.align, ensure_tasks(preset)
    return (
        preference_pairs(tasks.train, tasks.plays, settings.seed),
        preference_pairs(tasks.test, tasks.plays, settings.seed + 1),
    )


def ensure_reward(
    preset: Preset, callbacks: tuple = (), progress: bool = False
) -> tuple[RewardModel, list[dict]]:
    """A reward model started from the SFT model and trained on the preference pairs (chapter 7)."""
    settings = preset.align
    folder = stage_dir("reward", preset)
    if not folder.exists():
        tokenizer = ensure_tokenizer(preset)
        backbone, _ = ensure_sft(preset)
        train_pairs, test_pairs = preference_data(preset)
        max_len = preset.model.max_seq_len
        train = PairDataset(tokenizer, train_pairs, max_len, settings.template)
        val = PairDataset(tokenizer, test_pairs, max_len, settings.template)
        _train_stage(
            "reward",
            preset,
            RewardModel(backbone),
            settings.reward,
            train,
            val,
            callbacks,
            progress,
            loss_fn=reward_loss,
        )
    return _load_stage("reward", preset)


def _dpo_rows(preset: Preset) -> dict[str, list[dict]]:
    """DPO's cached pairs, each with the reference model's log-probs, built once (see dpo_pairs)."""
    settings = preset.align
    folder = stage_dir("dpo-data", preset)

    def build(tmp: Path) -> None:
        tasks, tokenizer, (sft, _) = (
            ensure_tasks(preset),
            ensure_tokenizer(preset),
            ensure_sft(preset),
        )
        train, test = preference_data(preset)
        train = train[: settings.offline_pairs]
        own = on_policy_pairs(
            sft,
            tokenizer,
            tasks.train[: settings.on_policy_prompts],
            settings.samples,
            seed=settings.seed,
            template=settings.template,
            max_new_tokens=settings.max_new_tokens,
        )
        for name, pairs in (("train", train + own), ("test", test)):
            dataset = PairDataset(
                tokenizer, pairs, preset.model.max_seq_len, settings.template
            )
            add_reference_logprobs(sft, dataset)
            rows = [
                {**asdict(p), "reference": r}
                for p, r in zip(dataset.pairs, dataset.reference.tolist())
            ]
            (tmp / f"{name}.jsonl").write_text(
                "".join(json.dumps(row) + "\n" for row in rows)
            )

    _build_once(folder, build)
    return {
        name: [
            json.loads(line)
            for line in (folder / f"{name}.jsonl").read_text().splitlines()
        ]
        for name in ("train", "test")
    }


def _pair(row: dict) -> PreferencePair:
    return PreferencePair(**{k: v for k, v in row.items() if k != "reference"})


def dpo_pairs(preset: Preset) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """DPO's (train, held-out) pairs: the offline pairs, plus on the training side the SFT model's own
    sampled answers scored by the task rules (on-policy pairs). Sampled once and cached."""
    rows = _dpo_rows(preset)
    return [_pair(r) for r in rows["train"]], [_pair(r) for r in rows["test"]]


def _dpo_datasets(preset: Preset) -> tuple[PairDataset, PairDataset]:
    """The cached (train, held-out) DPO pairs as datasets, with the reference log-probs already in them."""
    settings, tokenizer = preset.align, ensure_tokenizer(preset)
    datasets = []
    for rows in _dpo_rows(preset).values():
        dataset = PairDataset(
            tokenizer,
            [_pair(r) for r in rows],
            preset.model.max_seq_len,
            settings.template,
        )
        dataset.reference = torch.tensor([r["reference"] for r in rows])
        datasets.append(dataset)
    return datasets[0], datasets[1]


def ensure_dpo(
    preset: Preset,
    callbacks: tuple = (),
    progress: bool = False,
    beta: float | None = None,
) -> tuple[Transformer, list[dict]]:
    """The SFT model after DPO against a frozen copy of itself (chapter 8); `beta` overrides the preset's."""
    settings = preset.align
    if beta is not None:
        preset = replace(preset, align=replace(settings, beta=beta))
    folder = stage_dir("dpo", preset)
    if not folder.exists():
        train, val = _dpo_datasets(preset)
        policy, _ = ensure_sft(preset)
        _train_stage(
            "dpo",
            preset,
            policy,
            settings.dpo,
            train,
            val,
            callbacks,
            progress,
            loss_fn=make_dpo_loss(preset.align.beta, settings.nll_weight),
        )
    return _load_stage("dpo", preset)


TRAINED = ("pretrained", "sft", "reward", "dpo")  # the stages that run a Trainer


def ensure(stage: str, preset: Preset | None = None, progress: bool = False):
    """The artifact of `stage` for `preset` (default: the preset picked for this machine); `progress`
    shows a progress bar while a trained stage builds."""
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
