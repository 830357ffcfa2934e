"""Direct preference optimisation (DPO): learn from preference pairs without a reward
model.

The RLHF objective (maximise reward, stay close to a reference model with a KL penalty
of strength beta) has a closed-form optimum, and inverting it expresses the reward
through the policy itself: r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) + a term that
cancels in a pair. Putting this implicit reward into the Bradley-Terry loss gives a
plain classification loss on the policy's log-probabilities. The reference model is
frozen; its log-probabilities are computed once, before training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Transformer
from ..sequences import sequence_logprobs
from .pairs import PairDataset


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss and the implicit rewards beta * (log pi - log pi_ref) of the chosen
    and the rejected answers.

    loss = -log sigmoid(reward_chosen - reward_rejected). With the policy equal to the
    reference both rewards are 0 and the loss is log 2; it falls as the policy moves
    probability towards the chosen answers.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_reward = beta * (policy_chosen - reference_chosen)
    rejected_reward = beta * (policy_rejected - reference_rejected)
    return (
        -F.logsigmoid(chosen_reward - rejected_reward).mean(),
        chosen_reward,
        rejected_reward,
    )


@torch.no_grad()
def add_reference_logprobs(
    reference: Transformer, dataset: PairDataset, batch_size: int = 64
) -> None:
    """Score every pair once under the frozen reference model and store the scores in
    the dataset."""
    reference.eval()
    device = next(reference.parameters()).device
    dataset.reference = None
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.collate(
            [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        )
        logprobs = sequence_logprobs(
            reference, batch[0].to(device), batch[1].to(device)
        ).cpu()
        chosen, rejected = logprobs.chunk(2)
        out.append(torch.stack([chosen, rejected], dim=1))
    dataset.reference = torch.cat(out)


def make_dpo_loss(beta: float, nll_weight: float = 0.0, pair_loss=dpo_loss):
    """Loss function for the Trainer on PairDataset batches that carry reference
    log-probs.

    DPO only widens the gap between chosen and rejected answers; it can do so while the
    chosen answers themselves become less likely, which hurts a small model's answers.
    `nll_weight` > 0 adds the SFT loss on the chosen answers (per token), which keeps
    them likely (Pang et al., 2024). `pair_loss` computes the loss and the rewards from
    the four log-probs (chapter 08's exercise swaps in the reader's own).
    """

    def loss_fn(
        model: nn.Module, batch: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, dict]:
        if len(batch) < 4:
            raise ValueError(
                "DPO needs the reference log-probs: "
                "call add_reference_logprobs(reference, dataset)"
            )
        ids, answer, _, reference = batch
        policy_chosen, policy_rejected = sequence_logprobs(model, ids, answer).chunk(2)
        reference_chosen, reference_rejected = reference.chunk(2)
        loss, chosen, rejected = pair_loss(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta
        )
        if nll_weight:
            chosen_tokens = answer[: len(answer) // 2, 1:].sum(-1).clamp(min=1)
            loss = loss - nll_weight * (policy_chosen / chosen_tokens).mean()
        policy_chosen, policy_rejected = (
            policy_chosen.detach(),
            policy_rejected.detach(),
        )
        chosen, rejected = chosen.detach(), rejected.detach()
        return loss, {
            "accuracy": (chosen > rejected).float().mean(),
            "margin": (chosen - rejected).mean(),
            "chosen_reward": chosen.mean(),
            "rejected_reward": rejected.mean(),
            "chosen_logp": policy_chosen.mean(),
            "rejected_logp": policy_rejected.mean(),
        }

    return loss_fn
