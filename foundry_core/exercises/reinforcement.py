"""Exercises of chapter 09: the arithmetic of reinforcement learning (GRPO's group
advantages, the KL estimate, PPO's clipped objective, GAE), each checked against the
function the chapter shows."""

from __future__ import annotations

import torch

from ..align.policy_gradient import approx_kl, clipped_objective, gae, group_advantages
from .check import Case, Exercise, Mistake, register, seeded_randn

# ---------------------------------------------------------------- group advantages


def _group_cases() -> list[Case]:
    two_groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    return [
        Case(
            "two groups of 4, rules' rewards (0 or 1)",
            (torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]), two_groups),
        ),
        Case(
            "a reward model's scores, groups of 3 and 5 in mixed order",
            (seeded_randn(8), torch.tensor([1, 0, 1, 1, 0, 1, 0, 1])),
        ),
        Case(
            "a group whose answers all scored the same (it teaches nothing: 0)",
            (torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), two_groups),
        ),
    ]


def _over_the_batch(rewards, groups):
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-6)


def _per_group(rewards, groups, spread):
    advantages = torch.zeros_like(rewards)
    for group in groups.unique():
        scores = rewards[groups == group]
        advantages[groups == group] = (scores - scores.mean()) / spread(scores)
    return advantages


register(
    Exercise(
        "group_advantages",
        "09",
        "GRPO's baseline: each answer against the other answers to its prompt",
        "easy",
        "group_advantages(rewards, groups) -> advantages   # groups[i]: the prompt "
        "answer i belongs to",
        lambda rewards, groups: group_advantages(rewards, groups)[0],
        _group_cases,
        [
            Mistake(
                "compare each answer with the answers to the same prompt (its group), "
                "not with the whole batch",
                _over_the_batch,
            ),
            Mistake(
                "the spread is the group's own: .std(unbiased=False), plus 1e-6",
                lambda r, g: _per_group(r, g, lambda s: s.std() + 1e-6),
            ),
            Mistake(
                "a group whose rewards are all equal has spread 0: give its answers "
                "advantage 0 instead of dividing by 0",
                lambda r, g: _per_group(r, g, lambda s: s.std(unbiased=False)),
            ),
        ],
    )
)


# ---------------------------------------------------------------- the KL estimate


def _kl_cases() -> list[Case]:
    logp = -seeded_randn(3, 5).abs()
    return [
        Case("3 answers of 5 tokens", (logp, logp - 0.3 * seeded_randn(3, 5, seed=1))),
        Case("the policy equal to the reference (KL 0)", (logp, logp.clone())),
    ]


register(
    Exercise(
        "approx_kl",
        "09",
        "The per-token KL estimate that is never negative",
        "easy",
        "approx_kl(logp, ref_logp) -> per-token KL estimate   # log-probs of the "
        "sampled tokens",
        approx_kl,
        _kl_cases,
        [
            Mistake(
                "logp - ref_logp is an estimate too, but one token at a time it can be "
                "negative: use r - log r - 1 with r = p_ref / p",
                lambda logp, ref: logp - ref,
            ),
            Mistake(
                "r is the reference's probability over the policy's: "
                "r = exp(ref_logp - logp)",
                lambda logp, ref: approx_kl(ref, logp),
            ),
        ],
    )
)


# ---------------------------------------------------------------- clipped objective


def _clip_cases() -> list[Case]:
    old = -seeded_randn(4, 6).abs() - 0.5
    new = old + 0.4 * seeded_randn(4, 6, seed=1)  # ratios from about 0.5 to 2
    advantages = seeded_randn(4, 1, seed=2).expand(4, 6)  # one per answer, + and -
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, :2] = False  # the prompt
    mask[1, 4:] = mask[3, 5:] = False  # padding after shorter answers
    near = old + 0.05 * new.sin()
    return [
        Case("ratios near 1, clip 0.2", (near, old, advantages, mask, 0.2)),
        Case(
            "ratios far from 1 (many clipped), clip 0.2",
            (new, old, advantages, mask, 0.2),
        ),
        Case("the same ratios, clip 0.1", (new, old, advantages, mask, 0.1)),
    ]


def _objective(ratio, advantages, mask, clip, pick=torch.minimum):
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    return -((pick(ratio * advantages, clipped) * mask).sum() / mask.sum())


register(
    Exercise(
        "clipped_objective",
        "09",
        "PPO's clipped objective: no reward for moving a token's ratio past 1 +- clip",
        "medium",
        "clipped_objective(logp, old_logp, advantages, mask, clip) -> loss   "
        "# (answers, tokens) each; the mean over the answer tokens",
        lambda *args: clipped_objective(*args)[0],
        _clip_cases,
        [
            Mistake(
                "take the smaller (more pessimistic) of the plain and the clipped "
                "term: torch.minimum",
                lambda lp, old, a, m, c: _objective(
                    (lp - old).exp(), a, m, c, torch.maximum
                ),
            ),
            Mistake(
                "the optimizer minimises: return minus the objective",
                lambda *args: -clipped_objective(*args)[0],
            ),
            Mistake(
                "average over the answer tokens only (where mask is True), not over "
                "the prompt and the padding",
                lambda lp, old, a, m, c: clipped_objective(
                    lp, old, a, torch.ones_like(m), c
                )[0],
            ),
            Mistake(
                "the ratio is p_new / p_old = exp(logp - old_logp): divide the "
                "probabilities, not the log-probabilities",
                lambda lp, old, a, m, c: _objective(lp / old, a, m, c),
            ),
        ],
    )
)


# ---------------------------------------------------------------- GAE


def _gae_cases() -> list[Case]:
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    rewards = torch.zeros(2, 6)
    rewards[0, 5], rewards[1, 2] = 1.0, -0.5  # the score, on each answer's last token
    rewards[0, 2:5] = -0.02  # a KL penalty on the others
    values = 0.3 * seeded_randn(2, 6)  # a critic predicts at every position
    return [
        Case(f"two answers, {what}", (rewards, values, mask, gamma, lam))
        for what, gamma, lam in (
            ("gamma 1, lam 0.95", 1.0, 0.95),
            ("lam 0: one step, then trust the critic", 1.0, 0.0),
            ("gamma 0.9, lam 1: the whole discounted return", 0.9, 1.0),
        )
    ]


def _gae_written_out(rewards, values, mask, gamma, lam, decay=None, mask_next=True):
    """GAE step by step from the last token back; `decay` (gamma * lam when right) and
    `mask_next` (whether a value past the answer counts as 0) make the mistakes."""
    decay = gamma * lam if decay is None else decay
    advantages = torch.zeros_like(values)
    ahead = next_value = torch.zeros(len(values))
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        ahead = (delta + decay * ahead) * mask[:, t]
        advantages[:, t] = ahead
        next_value = values[:, t] * mask[:, t] if mask_next else values[:, t]
    return advantages, (advantages + values) * mask


register(
    Exercise(
        "gae",
        "09",
        "Generalised advantage estimation: the critic's surprises, summed ahead",
        "hard",
        "gae(rewards, values, mask, gamma, lam) -> (advantages, returns)   "
        "# (answers, tokens) each",
        gae,
        _gae_cases,
        [
            Mistake(
                "the returns the critic learns are advantages + values",
                lambda r, v, m, g, lam: (gae(r, v, m, g, lam)[0],) * 2,
            ),
            Mistake(
                "the deltas ahead are discounted by gamma * lam, not lam alone",
                lambda r, v, m, g, lam: _gae_written_out(r, v, m, g, lam, decay=lam),
            ),
            Mistake(
                "after an answer's last token nothing follows: its next value is 0, "
                "whatever the critic says at the padding",
                lambda r, v, m, g, lam: _gae_written_out(
                    r, v, m, g, lam, mask_next=False
                ),
            ),
        ],
    )
)
