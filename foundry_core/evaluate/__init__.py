"""Measuring a model: perplexity on held-out text, accuracy on tasks, how sure each
number is, and whether the test leaked into training.

Perplexity says how well a model predicts text it never saw; task accuracy says whether
it does what it is asked. Every accuracy is a sample, so `proportion_interval` and
`paired_difference` say how far it can be trusted. And both mean little if the test
items were in the training data, so `contamination` checks that too.
"""

from .choices import (
    ChoiceItem,
    ChoiceResult,
    answer_logprobs,
    multiple_choice_accuracy,
    play_choice_items,
)
from .compare import evaluate_models
from .contamination import ContaminationReport, contamination, ngram_hashes, words
from .perplexity import kl_to_reference, perplexity, window_plan
from .stats import PairedDifference, paired_difference, proportion_interval

__all__ = [
    "ChoiceItem",
    "ChoiceResult",
    "ContaminationReport",
    "PairedDifference",
    "answer_logprobs",
    "contamination",
    "evaluate_models",
    "kl_to_reference",
    "multiple_choice_accuracy",
    "ngram_hashes",
    "paired_difference",
    "perplexity",
    "play_choice_items",
    "proportion_interval",
    "window_plan",
    "words",
]
