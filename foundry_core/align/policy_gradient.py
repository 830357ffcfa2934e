"""The arithmetic of reinforcement learning on a language model: how far the policy has
moved (its ratio to the old policy, its KL to the reference), how much better than
expected each answer was (advantages: GAE with a critic, or GRPO's group baseline), and
the clipped objective that turns both into a loss.

Every function works on per-token tensors of shape (answers, tokens) with a boolean
mask that is True on the answer's tokens: the prompt and the padding count for nothing.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the positions where `mask` is True."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def answer_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over each answer's tokens, then over the answers: every answer counts
    the same, however long (GRPO's average; masked_mean lets long answers weigh
    more)."""
    mask = mask.to(values.dtype)
    per_answer = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_answer.mean()


def token_scores(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Log-probability and entropy of the policy at every position, (n, seq - 1) each:
    entry t is about the token ids[:, t + 1], chosen after ids[:, : t + 1]."""
    return scores_from_logits(model(ids[:, :-1])[0], ids)


def scores_from_logits(
    logits: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """token_scores from the logits of ids[:, :-1]: the log-probability of each next
    token and the entropy of the distribution it was drawn from."""
    logprobs = logits.float().log_softmax(-1)
    chosen = torch.gather(logprobs, 2, ids[:, 1:, None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return chosen, entropy


def approx_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens the policy sampled:
    r - log r - 1 with r = p_ref / p (Schulman's "k3"). Unlike logp - ref_logp it is
    never negative, and it is 0 exactly where the two policies agree."""
    log_ratio = ref_logp - logp
    return log_ratio.exp() - log_ratio - 1


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): (advantages, returns).

    delta_t = r_t + gamma * V_(t+1) - V_t says how much better step t went than the
    critic expected; the advantage sums the deltas ahead, discounted by gamma * lam.
    lam = 1 is the whole observed return minus V (unbiased, noisy), lam = 0 trusts the
    critic after one step (biased, calm). After an answer's last token nothing follows:
    its next value is 0.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    ahead = torch.zeros_like(values[:, 0])  # the advantage of step t + 1
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        ahead = (delta + gamma * lam * ahead) * mask[:, t]
        advantages[:, t] = ahead
        next_value = values[:, t] * mask[:, t]
    return advantages, (advantages + values) * mask


def group_advantages(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    eps: float = 1e-6,
    scale: bool = True,
) -> tuple[torch.Tensor, int]:
    """GRPO's baseline (Shao et al. 2024): each answer's reward minus the mean of its
    group (the answers to the same prompt), divided by the group's standard deviation.

    Returns (advantages, skipped): a group whose rewards are all equal teaches nothing
    (every answer was as good as the others) and gets advantage 0; `skipped` counts
    such groups. scale=False keeps the difference from the mean unscaled (Liu et al.
    2025, "Dr. GRPO"): dividing by the spread gives a prompt that one answer in eight
    solves three times the weight of one that half the answers solve.
    """
    if rewards.numel() == 0:
        raise ValueError("no rewards: every group needs at least one answer")
    if rewards.shape != groups.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and groups {tuple(groups.shape)} "
            "must have the same shape"
        )
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    skipped = 0
    for group in groups.unique():
        members = groups == group
        scores = rewards[members].float()
        spread = scores.std(unbiased=False)
        if len(scores) < 2 or spread < eps:
            skipped += 1
            continue
        centred = scores - scores.mean()
        advantages[members] = centred / (spread + eps) if scale else centred
    return advantages, skipped


def informative_rows(groups: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The indices of the answers whose group taught something (some advantage is not
    0). Dropping the others before the loss (DAPO, Yu et al. 2025, resamples to
    replace them) keeps every optimizer step made of answers that carry a signal."""
    taught = groups[advantages != 0].unique()
    return torch.isin(groups, taught).nonzero().squeeze(-1)


def clipped_objective(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    mean: Callable = masked_mean,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss (Schulman et al. 2017) and the share of tokens
    whose ratio was clipped.

    ratio = p_new / p_old of each sampled token. The loss pushes the ratio up where the
    advantage is positive and down where it is negative, but the min with the clipped
    ratio removes the incentive (and the gradient) to move beyond 1 +- clip: one batch
    of answers cannot drag the policy far from the one that sampled them. `mean`
    averages over the tokens: masked_mean (PPO) or answer_mean (GRPO).
    """
    ratio = (logp - old_logp).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    loss = -mean(torch.minimum(unclipped, clipped), mask)
    clip_fraction = masked_mean(((ratio - 1).abs() > clip).float(), mask)
    return loss, clip_fraction.detach()
