"""Several aligned models side by side on the same held-out questions: how often each is
right (with its interval, and against a reference model question by question), how far
it moved from that reference, how long its answers are, and what its training cost."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..evaluate.stats import paired_difference, proportion_interval
from ..tokenizer import Tokenizer
from .chat import CHATML, ChatTemplate
from .rollout import rollout
from .tasks import Example, is_correct


@torch.no_grad()
def answer_kl(
    model: nn.Module,
    reference: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    batch_size: int = 32,
) -> torch.Tensor:
    """KL(model || reference) summed over each answer's tokens, exactly (over the whole
    vocabulary at every answer position, not estimated from samples): (n,) nats."""
    device = next(model.parameters()).device
    kls = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size, :-1].to(device)
        logp = model(rows)[0].float().log_softmax(-1)
        ref_logp = reference(rows)[0].float().log_softmax(-1)
        per_token = (logp.exp() * (logp - ref_logp)).sum(-1)
        answer = mask[start : start + batch_size, 1:].to(device)
        kls.append((per_token * answer).sum(-1).cpu())
    return torch.cat(kls)


def policy_table(
    models: dict[str, nn.Module],
    reference: str,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    max_new_tokens: int,
    template: str | ChatTemplate = CHATML,
    training_tokens: dict[str, int] | None = None,
) -> list[dict]:
    """One row per model, from its greedy answers to `examples`: accuracy with its
    95% interval, the paired difference from `models[reference]` on the same
    questions, KL from the reference (nats per answer, on the model's own answers),
    answer length in tokens, and the tokens its training stage read (if given).

    The rows hold numbers; `correct` (one bool per question) is kept for further
    comparisons."""
    if reference not in models:
        raise ValueError(f"the reference '{reference}' is not among {list(models)}")
    prompts = [e.prompt for e in examples]
    answered = {}
    for name, model in models.items():
        was_training = model.training
        model.eval()
        answers = rollout(model, tokenizer, prompts, 1, max_new_tokens, 0.0, template)
        kl = answer_kl(model, models[reference].eval(), answers.ids, answers.answer)
        model.train(was_training)
        correct = [is_correct(e, t) for e, t in zip(examples, answers.texts)]
        answered[name] = (correct, kl, answers)
    base_correct = answered[reference][0]
    rows = []
    for name, (correct, kl, answers) in answered.items():
        low, high = proportion_interval(sum(correct), len(correct))
        row = {
            "model": name,
            "accuracy": sum(correct) / len(correct),
            "interval": (low, high),
            f"vs {reference}": paired_difference(base_correct, correct),
            f"KL from {reference}": kl.mean().item(),
            "answer tokens": answers.answer_lengths.float().mean().item(),
            "correct": correct,
        }
        if training_tokens is not None:
            row["training tokens"] = training_tokens.get(name, 0)
        rows.append(row)
    return rows
