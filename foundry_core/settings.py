"""The other sections of a recipe: data, post-training, evaluation and quantization.

Like the configs in config.py, each checks itself on construction and round-trips
through a dict, so `with_overrides(preset, "quantize.group_sizes=(32,)")` is validated
like any other setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import TrainConfig, _Validated, require_positive_ints, require_seed


def require_fraction(
    owner: str, name: str, value: float, *, closed: bool = False
) -> None:
    """Raise unless 0 < value < 1 (or <= 1 with closed=True)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 < value <= 1 if closed else 0 < value < 1)
    ):
        bound = "<= 1" if closed else "< 1"
        raise ValueError(
            f"{owner}.{name} must be a number with 0 < {name} {bound}, got {value!r}"
        )


@dataclass(frozen=True)
class DataSettings(_Validated):
    """What the data stages do (chapters 1-2): with the vocabulary size, a preset's data
    is fully described by these."""

    corpus: str = "shakespeare"
    # a large corpus pretraining also reads when it can be had (online, fetched once;
    # see data/stream.py), with `corpus` still giving the tasks and validation plays
    large_corpus: str | None = None
    # keep only the first documents (the `ci` preset, so tests stay fast)
    max_documents: int | None = None
    val_fraction: float = 0.1  # share of the documents held out for validation
    seed: int = 0  # the split and the MinHash functions
    shingle_words: int = 5  # near-duplicate detection within the training corpus
    # estimated Jaccard similarity above which a document is dropped
    near_dup_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.max_documents is not None:
            require_positive_ints("DataSettings", max_documents=self.max_documents)
        require_positive_ints("DataSettings", shingle_words=self.shingle_words)
        require_fraction("DataSettings", "val_fraction", self.val_fraction)
        require_fraction(
            "DataSettings", "near_dup_threshold", self.near_dup_threshold, closed=True
        )
        require_seed("DataSettings", self.seed)


# the post-training runs, each a TrainConfig inside AlignSettings
STAGES = ("sft", "lora", "reward", "dpo", "grpo", "ppo")


@dataclass(frozen=True)
class AlignSettings(_Validated):
    """The post-training runs (chapters 6-9): one TrainConfig per stage, the task data,
    LoRA's adapters, DPO's pairs and the RL settings. For GRPO and PPO a TrainConfig's
    max_steps counts RL steps and its batch_size the prompts each step answers."""

    sft: TrainConfig
    lora: TrainConfig  # SFT through LoRA adapters, on float or int4 weights (chapter 6)
    reward: TrainConfig
    dpo: TrainConfig
    grpo: TrainConfig
    ppo: TrainConfig
    train_per_task: int = 1500  # generated training questions per task
    test_per_task: int = 100  # held-out questions per task
    held_out: float = 0.2  # share of the plays whose questions are only ever tested on
    template: str = "chatml"
    # LoRA: the adapters' rank and alpha (their update is scaled by alpha / rank)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    beta: float = 0.1  # DPO: how far the policy may move from the reference
    # DPO: weight of the SFT loss on chosen answers added to the DPO loss
    nll_weight: float = 1.0
    # DPO: training prompts the SFT model answers for its own pairs
    on_policy_prompts: int = 300
    offline_pairs: int = 900  # DPO: how many of the offline training pairs it also uses
    samples: int = 4  # answers sampled per prompt
    max_new_tokens: int = 16
    seed: int = 0  # tasks, pairs and on-policy sampling
    # RL (chapter 9): answers sampled per prompt, passes over them and optimizer steps
    # per pass, the clip of the probability ratio, the sampling temperature, and the
    # KL coefficients (GRPO: in the loss; PPO: a penalty in the reward)
    group_size: int = 8
    rl_epochs: int = 2
    rl_minibatches: int = 2
    clip: float = 0.2
    rl_temperature: float = 1.0
    grpo_kl: float = 0.04
    ppo_kl: float = 0.05
    # chapter 9's held-out check: answers sampled per question. More samples shrink the
    # sampling noise of the paired interval (4 -> 16 halved it at the cpu preset)
    rl_eval_samples: int = 16

    def __post_init__(self) -> None:
        for name in STAGES:
            if not isinstance(getattr(self, name), TrainConfig):
                raise ValueError(
                    f"AlignSettings.{name} must be a TrainConfig, "
                    f"got {getattr(self, name)!r}"
                )
        require_positive_ints(
            "AlignSettings",
            train_per_task=self.train_per_task,
            test_per_task=self.test_per_task,
            on_policy_prompts=self.on_policy_prompts,
            offline_pairs=self.offline_pairs,
            samples=self.samples,
            rl_eval_samples=self.rl_eval_samples,
            max_new_tokens=self.max_new_tokens,
            group_size=self.group_size,
            rl_epochs=self.rl_epochs,
            rl_minibatches=self.rl_minibatches,
            lora_rank=self.lora_rank,
        )
        require_fraction("AlignSettings", "clip", self.clip)
        for name in ("rl_temperature", "grpo_kl", "ppo_kl", "lora_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"AlignSettings.{name} must be a number, got {value!r}"
                )
            positive = name in ("rl_temperature", "lora_alpha")
            if value < 0 or (positive and value == 0):
                raise ValueError(
                    f"AlignSettings.{name} must be "
                    f"{'> 0' if positive else '>= 0'}, got {value}"
                )
        require_fraction("AlignSettings", "held_out", self.held_out)
        if (
            isinstance(self.beta, bool)
            or not isinstance(self.beta, (int, float))
            or not self.beta > 0
        ):
            raise ValueError(
                f"AlignSettings.beta must be positive (0.1 is usual), got {self.beta!r}"
            )
        if (
            isinstance(self.nll_weight, bool)
            or not isinstance(self.nll_weight, (int, float))
            or self.nll_weight < 0
        ):
            raise ValueError(
                f"AlignSettings.nll_weight must be >= 0, got {self.nll_weight!r}"
            )
        require_seed("AlignSettings", self.seed)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlignSettings:
        stages = {
            k: TrainConfig.from_dict(v) if isinstance(v, dict) else v
            for k, v in values.items()
            if k in STAGES
        }
        return super().from_dict({**values, **stages})


@dataclass(frozen=True)
class EvalSettings(_Validated):
    """How chapters 10-11 and the report card measure a model."""

    # validation windows that perplexity reads (each seq_len tokens)
    max_windows: int = 64

    def __post_init__(self) -> None:
        require_positive_ints("EvalSettings", max_windows=self.max_windows)


@dataclass(frozen=True)
class QuantSettings(_Validated):
    """How chapter 11 and the report card quantize a model."""

    # the int4 group sizes to compare (chapter 11); the report card exports the
    # largest of them that divides every layer: the fewest scales, the smallest file
    group_sizes: tuple[int, ...] = (32, 64, 128)

    def __post_init__(self) -> None:
        sizes = self.group_sizes
        if isinstance(sizes, int) or not sizes:
            raise ValueError(
                "QuantSettings.group_sizes must be a non-empty list of positive "
                f"integers, got {sizes!r}"
            )
        require_positive_ints(
            "QuantSettings", **{f"group_sizes[{i}]": g for i, g in enumerate(sizes)}
        )
        object.__setattr__(self, "group_sizes", tuple(sizes))
