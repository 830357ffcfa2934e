"""Post-training: chat templates, instruction tasks, SFT, a reward model, DPO, and
reinforcement learning (PPO, GRPO)."""

from ..sequences import IGNORE, sequence_logprobs
from .chat import (
    ALPACA,
    CHATML,
    TEMPLATES,
    ChatTemplate,
    encode_chat,
    encode_prompt,
    get_template,
    render,
)
from .dpo import add_reference_logprobs, dpo_loss, make_dpo_loss
from .pairs import PairDataset
from .policy_table import policy_table
from .respond import (
    Graded,
    accuracy_by_task,
    answer,
    grade,
    on_policy_pairs,
    sampled_accuracy,
    well_formed_share,
)
from .reward import (
    RewardModel,
    bradley_terry_loss,
    reward_loss,
    score_answers,
    score_pairs,
)
from .rl import PolicyWithValue, RLConfig, RLTrainer
from .rollout import Rollouts, rollout
from .sft import ChatDataset, example_chat, sft_targets
from .tasks import (
    TASKS,
    Example,
    Line,
    PreferencePair,
    TaskSplits,
    build_tasks,
    drop_ties,
    idiom_lines,
    is_correct,
    is_well_formed,
    play_lines,
    preference_pairs,
    wrong_answer,
)

__all__ = [
    "ALPACA",
    "CHATML",
    "ChatDataset",
    "ChatTemplate",
    "Example",
    "Graded",
    "IGNORE",
    "Line",
    "PairDataset",
    "PolicyWithValue",
    "PreferencePair",
    "RLConfig",
    "RLTrainer",
    "RewardModel",
    "Rollouts",
    "TASKS",
    "TEMPLATES",
    "TaskSplits",
    "accuracy_by_task",
    "add_reference_logprobs",
    "answer",
    "bradley_terry_loss",
    "build_tasks",
    "dpo_loss",
    "drop_ties",
    "encode_chat",
    "encode_prompt",
    "example_chat",
    "get_template",
    "grade",
    "is_correct",
    "is_well_formed",
    "make_dpo_loss",
    "on_policy_pairs",
    "policy_table",
    "sampled_accuracy",
    "idiom_lines",
    "play_lines",
    "preference_pairs",
    "render",
    "reward_loss",
    "rollout",
    "score_answers",
    "score_pairs",
    "sequence_logprobs",
    "sft_targets",
    "well_formed_share",
    "wrong_answer",
]
