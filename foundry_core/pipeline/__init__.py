"""The hand-off between chapters: each stage's artifact, built on demand and cached.

Every chapter runs on its own in a fresh kernel. When chapter 4 needs the tokenized
corpus, `ensure("tokens", preset)` returns it, building whatever is missing with the
same functions chapters 1 and 2 teach. Where each artifact lives, and how it is written
so that an interrupted build leaves nothing half-written, is in store.py; the stages
themselves are in data_stages.py, pretrain.py and align_stages.py.
"""

from __future__ import annotations

from ..align import TaskSplits
from ..presets import Preset, pick_preset
from ..tokenizer import Tokenizer
from .align_stages import (
    dpo_pairs,
    ensure_dpo,
    ensure_reward,
    ensure_sft,
    ensure_tasks,
    preference_data,
)
from .budget import MAX_PASSES, DataBudget, data_budget
from .data_stages import ensure_corpus, ensure_tokenizer, ensure_tokens
from .deploy_stages import (
    ExportFiles,
    QuantizedModels,
    ensure_export,
    ensure_quantized,
    int4_group_size,
)
from .lora_stages import ensure_lora, lora_base, template_tokens, with_adapters
from .pretrain import (
    PRETRAIN_CHECKPOINTS,
    ensure_distilled_draft,
    ensure_draft,
    ensure_pretrained,
    finish_pretraining,
    pretrain_trainer,
    publish_pretrained,
)
from .results import Corpus, TokenFiles, TrainedStage
from .rl_stages import ensure_grpo, ensure_ppo, reward_model_scores, rule_rewards
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
    "Corpus",
    "DataBudget",
    "ExportFiles",
    "MAX_PASSES",
    "QuantizedModels",
    "TokenFiles",
    "TrainedStage",
    "PRETRAIN_CHECKPOINTS",
    "STAGES",
    "ADAPTED",
    "TRAINED",
    "artifacts_root",
    "corpus_key",
    "data_budget",
    "dpo_pairs",
    "ensure",
    "ensure_corpus",
    "ensure_dpo",
    "ensure_distilled_draft",
    "ensure_draft",
    "ensure_export",
    "ensure_grpo",
    "ensure_lora",
    "ensure_ppo",
    "ensure_quantized",
    "int4_group_size",
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
    "reward_model_scores",
    "rule_rewards",
    "stage_dir",
    "stage_summary",
    "lora_base",
    "template_tokens",
    "with_adapters",
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
    "lora",
    "qlora",
    "reward",
    "dpo",
    "grpo",
    "ppo",
    "quantized",
    "export",
)

# the stages that run a Trainer and keep its run folder (runs.load_run reads them)
TRAINED = ("pretrained", "sft", "reward", "dpo", "grpo", "ppo")
# SFT through adapters: a Trainer too, but the folder keeps only the adapters
ADAPTED = ("lora", "qlora")


def ensure(
    stage: str, preset: Preset | None = None, progress: bool = False
) -> (
    Corpus
    | Tokenizer
    | TokenFiles
    | TaskSplits
    | TrainedStage
    | QuantizedModels
    | ExportFiles
):
    """The artifact of `stage` for `preset` (default: the preset picked for this
    machine); `progress` shows a progress bar while a trained stage builds.

    One type per stage: corpus a `Corpus`, tokenizer a `Tokenizer`, tokens
    `TokenFiles`, tasks `TaskSplits`, and every trained stage (pretrained, sft, lora,
    qlora, reward, dpo, grpo, ppo) a `TrainedStage` (model, history); quantized
    `QuantizedModels`, export `ExportFiles`."""
    preset = preset or pick_preset()
    builders = {
        "corpus": ensure_corpus,
        "tokenizer": ensure_tokenizer,
        "tokens": ensure_tokens,
        "pretrained": ensure_pretrained,
        "tasks": ensure_tasks,
        "sft": ensure_sft,
        "lora": ensure_lora,
        "qlora": lambda preset, progress: ensure_lora(preset, True, progress=progress),
        "reward": ensure_reward,
        "dpo": ensure_dpo,
        "grpo": ensure_grpo,
        "ppo": ensure_ppo,
        "quantized": ensure_quantized,
        "export": ensure_export,
    }
    if stage not in builders:
        raise ValueError(f"unknown stage '{stage}': choose one of {', '.join(STAGES)}")
    if stage in TRAINED or stage in ADAPTED:
        return builders[stage](preset, progress=progress)
    return builders[stage](preset)


def stage_summary(stage: str, preset: Preset, result) -> dict:
    """What a built stage holds, in a few numbers (`result`: what `ensure` returned)."""
    summary: dict = {"stage": stage}
    if stage != "tasks":
        summary["folder"] = str(stage_dir(stage, preset))
    if isinstance(result, Tokenizer):
        summary["vocabulary"] = len(result)
    elif isinstance(result, TaskSplits):
        summary["train"] = len(result.train)
        summary["held out"] = len(result.test)
        summary["plays"] = len(result.plays)
    else:
        summary.update(result.summary())
    return summary
