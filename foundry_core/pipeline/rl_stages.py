"""The reinforcement-learning stages (chapter 9): GRPO on the rules' verdict and PPO on
the reward model's score, each started from the SFT model and kept near it."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch

from ..align import (
    PolicyWithValue,
    RLConfig,
    RLTrainer,
    is_correct,
    score_answers,
)
from ..align.rl import RewardFn
from ..align.tasks import Example
from ..presets import Preset
from .align_stages import ensure_reward, ensure_sft, ensure_tasks
from .data_stages import ensure_tokenizer
from .pretrain import _load_stage, build_trained_stage
from .results import TrainedStage
from .store import stage_dir


def rule_rewards(examples: Sequence[Example], answers: Sequence[str]) -> torch.Tensor:
    """1 for an answer the task's rule accepts, else 0: a verifiable reward."""
    return torch.tensor([float(is_correct(e, a)) for e, a in zip(examples, answers)])


def check_reward_model(model, tokenizer) -> None:
    """A reward model reads the policy's tokens: a clear error if its vocabulary is
    another tokenizer's."""
    if model.config.vocab_size != len(tokenizer):
        raise ValueError(
            f"the reward model has {model.config.vocab_size} tokens, the tokenizer "
            f"{len(tokenizer)}: train the reward model with the policy's tokenizer"
        )


def reward_model_scores(preset: Preset) -> RewardFn:
    """The chapter 7 reward model's score of each answer."""
    model, _ = ensure_reward(preset)
    tokenizer, template = ensure_tokenizer(preset), preset.align.template
    check_reward_model(model, tokenizer)

    def scores(examples: Sequence[Example], answers: Sequence[str]) -> torch.Tensor:
        prompts = [e.prompt for e in examples]
        return score_answers(model, tokenizer, prompts, list(answers), template)

    return scores


def rl_config(preset: Preset, algorithm: str) -> RLConfig:
    """The RL step of `algorithm` ("grpo" or "ppo") as the preset sets it."""
    s = preset.align
    return RLConfig(
        algorithm,
        s.group_size,
        s.rl_epochs,
        s.rl_minibatches,
        s.clip,
        s.grpo_kl if algorithm == "grpo" else s.ppo_kl,
        s.rl_temperature,
        s.max_new_tokens,
    )


def _train_rl(
    stage: str,
    preset: Preset,
    reward_fn: RewardFn,
    watch: dict[str, RewardFn],
    callbacks: tuple,
    progress: bool,
) -> None:
    tokenizer, tasks = ensure_tokenizer(preset), ensure_tasks(preset)
    sft, _ = ensure_sft(preset)
    config = getattr(preset.align, stage)
    policy = copy.deepcopy(sft)
    if stage == "ppo":
        policy = PolicyWithValue.from_policy(policy)

    build_trained_stage(
        stage,
        preset,
        config.seed,
        lambda **run: RLTrainer(
            policy,
            sft,
            config,
            rl_config(preset, stage),
            tasks.train,
            reward_fn,
            tokenizer,
            preset.align.template,
            watch,
            tasks.test,
            callbacks=callbacks,
            progress=progress,
            **run,
        ),
    )


def ensure_grpo(
    preset: Preset, callbacks: tuple = (), progress: bool = False
) -> TrainedStage:
    """The SFT model after GRPO with the task rules as the reward."""
    if not stage_dir("grpo", preset).exists():
        _train_rl("grpo", preset, rule_rewards, {}, callbacks, progress)
    return _load_stage("grpo", preset)


def ensure_ppo(
    preset: Preset,
    callbacks: tuple = (),
    progress: bool = False,
    kl: float | None = None,
) -> TrainedStage:
    """The SFT model after PPO against the reward model, with the rules' verdict of
    the same answers logged as "correct"; `kl` overrides the preset's KL penalty."""
    if kl is not None:
        preset = replace(preset, align=replace(preset.align, ppo_kl=kl))
    if not stage_dir("ppo", preset).exists():
        _train_rl(
            "ppo",
            preset,
            reward_model_scores(preset),
            {"correct": rule_rewards},
            callbacks,
            progress,
        )
    return _load_stage("ppo", preset)
