"""The post-training stages: the instruction tasks, SFT (chapter 6), the reward model
(chapter 7) and DPO (chapter 8), each trained from the stage before it."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..align import (
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
from ..presets import Preset
from .data_stages import ensure_corpus, ensure_tokenizer
from .pretrain import _load_stage, _train_stage, ensure_pretrained
from .results import TrainedStage
from .store import _build_once, stage_dir


def ensure_tasks(preset: Preset) -> TaskSplits:
    """Train and held-out instruction examples from the preset's corpus, keeping only
    those whose chat (with room for a full answer) fits the model's context."""
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


def chat_datasets(preset: Preset) -> tuple[ChatDataset, ChatDataset]:
    """The instruction tasks as (train, held-out) chats in the preset's template, with
    the loss on the answers: what SFT, with or without adapters, trains on."""
    settings = preset.align
    tokenizer, tasks = ensure_tokenizer(preset), ensure_tasks(preset)
    return tuple(
        ChatDataset(
            tokenizer,
            [example_chat(e) for e in examples],
            preset.model.max_seq_len,
            settings.template,
        )
        for examples in (tasks.train, tasks.test)
    )


def ensure_sft(
    preset: Preset, callbacks: tuple = (), progress: bool = False
) -> TrainedStage:
    """The pretrained model fine-tuned on the instruction tasks (chapter 6), and its
    history."""
    if not stage_dir("sft", preset).exists():
        model, _ = ensure_pretrained(preset)
        train, val = chat_datasets(preset)
        _train_stage(
            "sft", preset, model, preset.align.sft, train, val, callbacks, progress
        )
    return _load_stage("sft", preset)


def preference_data(preset: Preset) -> tuple[list, list]:
    """(train, held-out) preference pairs: the reference answer against a realistic
    wrong one."""
    settings, tasks = preset.align, ensure_tasks(preset)
    return (
        preference_pairs(tasks.train, tasks.plays, settings.seed),
        preference_pairs(tasks.test, tasks.plays, settings.seed + 1),
    )


def ensure_reward(
    preset: Preset, callbacks: tuple = (), progress: bool = False
) -> TrainedStage:
    """A reward model started from the SFT model and trained on the preference pairs
    (chapter 7)."""
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
    """DPO's cached pairs, each with the reference model's log-probs, built once (see
    dpo_pairs)."""
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
    """DPO's (train, held-out) pairs: the offline pairs, plus on the training side the
    SFT model's own sampled answers scored by the task rules (on-policy pairs). Sampled
    once and cached."""
    rows = _dpo_rows(preset)
    return [_pair(r) for r in rows["train"]], [_pair(r) for r in rows["test"]]


def _dpo_datasets(preset: Preset) -> tuple[PairDataset, PairDataset]:
    """The cached (train, held-out) DPO pairs as datasets, with the reference log-probs
    already in them."""
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
) -> TrainedStage:
    """The SFT model after DPO against a frozen copy of itself (chapter 8); `beta`
    overrides the preset's."""
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
