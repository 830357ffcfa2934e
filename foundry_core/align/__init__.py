"""Post-training: chat templates, instruction tasks, SFT, a reward model and DPO."""

from .chat import ALPACA, CHATML, TEMPLATES, ChatTemplate, encode_chat, encode_prompt, get_template, render
from .dpo import add_reference_logprobs, dpo_loss, make_dpo_loss, sequence_logprobs
from .pairs import PairDataset
from .respond import Graded, accuracy_by_task, answer, grade, on_policy_pairs, well_formed_share
from .reward import RewardModel, bradley_terry_loss, reward_loss, score_answers, score_pairs
from .sft import IGNORE, ChatDataset, example_chat, sft_targets
from .tasks import (TASKS, Example, Line, PreferencePair, TaskSplits, build_tasks, drop_ties, is_correct,
                    is_well_formed,
                    play_lines, preference_pairs, wrong_answer)

__all__ = [name for name in dir() if not name.startswith("_")]
