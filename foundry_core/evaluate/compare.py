"""One table of models: perplexity, task accuracy and multiple choice, side by side."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..align.chat import CHATML, ChatTemplate
from ..align.respond import accuracy_by_task, grade
from ..align.tasks import Example
from ..tokenizer import Tokenizer
from .choices import multiple_choice_accuracy, play_choice_items
from .perplexity import _evaluating, perplexity


def evaluate_models(
    models: dict[str, nn.Module],
    tokenizer: Tokenizer,
    val_tokens: np.ndarray | torch.Tensor,
    test_examples: Sequence[Example],
    seq_len: int,
    *,
    batch_size: int = 8,
    stride: int | None = None,
    max_windows: int | None = None,
    plays: Sequence[str] | None = None,
    template: str | ChatTemplate = CHATML,
    max_new_tokens: int = 16,
) -> list[dict]:
    """One row per model: held-out perplexity, exact-match accuracy per task (and
    "accuracy" over all), and, given the plays, multiple-choice accuracy on the "play"
    questions and their number ("choice_items"). Ready for pandas.DataFrame(rows)."""
    rows = []
    for name, model in models.items():
        row: dict = {
            "model": name,
            "perplexity": perplexity(
                model, val_tokens, seq_len, batch_size, stride, max_windows
            ),
        }
        if test_examples:
            with _evaluating(model):
                graded = grade(
                    model,
                    tokenizer,
                    test_examples,
                    template=template,
                    max_new_tokens=max_new_tokens,
                )
            for task, value in accuracy_by_task(graded).items():
                row["accuracy" if task == "all" else f"accuracy_{task}"] = value
        items = (
            play_choice_items(test_examples, plays, n_options=min(4, len(set(plays))))
            if plays
            else []
        )
        if items:
            row["choice_accuracy"] = multiple_choice_accuracy(
                model, tokenizer, items, template
            ).accuracy
            row["choice_items"] = len(items)
        rows.append(row)
    return rows
