"""Exercises of chapters 05-08: sampling, the SFT loss mask, the reward model's loss and
DPO's, each checked against the function the chapter shows."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..align.dpo import dpo_loss
from ..align.reward import bradley_terry_loss
from ..align.sft import sft_targets
from ..generate import next_token_probs
from ..sequences import IGNORE
from .check import Case, Exercise, Mistake, register, seeded_randn

# ---------------------------------------------------------------- chapter 05


def temperature_reference(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return next_token_probs(logits, temperature=temperature)


def _temperature_cases() -> list[Case]:
    logits = 3 * seeded_randn(2, 10)
    return [Case(f"temperature {t}", (logits, t)) for t in (1.0, 0.5, 2.0)] + [
        Case("temperature 0 (greedy: all the mass on the best token)", (logits, 0.0))
    ]


register(
    Exercise(
        "temperature",
        "05",
        "Temperature: sharpen or flatten the next-token distribution",
        "easy",
        "temperature(logits, t) -> probabilities   # logits: (batch, vocab)",
        temperature_reference,
        _temperature_cases,
        [
            Mistake(
                "divide the logits by the temperature (a low temperature sharpens)",
                lambda x, t: (
                    (x * t).softmax(-1)
                    if t
                    else F.one_hot(x.argmax(-1), x.shape[-1]).float()
                ),
            ),
            Mistake(
                "the softmax runs over the vocabulary (the last axis)",
                lambda x, t: (
                    (x / t).softmax(0)
                    if t
                    else F.one_hot(x.argmax(-1), x.shape[-1]).float()
                ),
            ),
        ],
        hint="temperature 0 cannot divide: it means always the most likely token",
    )
)


def top_p_reference(probs: torch.Tensor, p: float) -> torch.Tensor:
    return next_token_probs(probs.log(), top_p=p)


def _top_p_cases() -> list[Case]:
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.1, 0.6, 0.05, 0.2]])
    return [
        Case("p = 0.75 on two distributions", (probs, 0.75)),
        Case("p = 0.55 (a little over the best token's mass)", (probs, 0.55)),
        Case("p = 0.01 (the best token always stays)", (probs, 0.01)),
    ]


def _top_p(probs, p, strict=False, normalize=True):
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    kept = (
        sorted_probs.cumsum(-1) <= p
        if strict
        else sorted_probs.cumsum(-1) - sorted_probs < p
    )
    sorted_probs = sorted_probs * kept
    out = torch.zeros_like(probs).scatter_(1, order, sorted_probs)
    return out / out.sum(-1, keepdim=True) if normalize else out


register(
    Exercise(
        "top_p",
        "05",
        "Top-p (nucleus) sampling: keep the fewest best tokens whose mass reaches p",
        "medium",
        "top_p(probs, p) -> probabilities   # probs: (batch, vocab), rows sum to 1",
        top_p_reference,
        _top_p_cases,
        [
            Mistake(
                "keep a token when the mass of the tokens better than it is below p, "
                "so the token that crosses p stays (and the best token always does)",
                lambda probs, p: _top_p(probs, p, strict=True),
            ),
            Mistake(
                "renormalize: the kept probabilities must add up to 1 again",
                lambda probs, p: _top_p(probs, p, normalize=False),
            ),
        ],
    )
)


# ---------------------------------------------------------------- chapter 06


def _sft_cases() -> list[Case]:
    ids = [2, 5, 6, 7, 8, 9, 3]
    trained = [False, False, False, True, True, True, True]
    return [
        Case("a prompt of 3 tokens, then a 4-token answer", (ids, trained)),
        Case(
            "two assistant turns",
            (
                [2, 5, 6, 7, 8, 5, 9, 3],
                [False, False, True, True, False, False, True, True],
            ),
        ),
    ]


register(
    Exercise(
        "sft_targets",
        "06",
        "The SFT loss mask: only the assistant's tokens are targets",
        "medium",
        "sft_targets(ids, trained) -> (inputs, targets)   # IGNORE = -100 "
        "for untrained targets",
        sft_targets,
        _sft_cases,
        [
            Mistake(
                "position i predicts token i + 1, so its mask is trained[i + 1]: "
                "use trained[1:], not trained[:-1]",
                lambda ids, tr: (
                    list(ids[:-1]),
                    [t if k else IGNORE for t, k in zip(ids[1:], tr[:-1])],
                ),
            ),
            Mistake(
                f"mark an ignored target with IGNORE ({IGNORE}), which the loss skips; "
                "0 is a real token id",
                lambda ids, tr: (
                    list(ids[:-1]),
                    [t if k else 0 for t, k in zip(ids[1:], tr[1:])],
                ),
            ),
            Mistake(
                "shift by one: the inputs are ids[:-1] and the targets ids[1:]",
                lambda ids, tr: (
                    list(ids),
                    [t if k else IGNORE for t, k in zip(ids, tr)],
                ),
            ),
        ],
    )
)


# ---------------------------------------------------------------- chapters 07 and 08


def _reward_cases() -> list[Case]:
    return [
        Case("a batch of 6 pairs", (seeded_randn(6), seeded_randn(6, seed=1))),
        Case(
            "a pair the model gets badly wrong (margin -200)",
            (torch.tensor([-100.0, 1.0]), torch.tensor([100.0, 0.0])),
        ),
    ]


register(
    Exercise(
        "bradley_terry",
        "07",
        "The reward model's loss: -log sigmoid(r_chosen - r_rejected)",
        "easy",
        "bradley_terry(chosen_rewards, rejected_rewards) -> loss   # mean over pairs",
        bradley_terry_loss,
        _reward_cases,
        [
            Mistake(
                "the chosen answer should score higher: sigmoid(chosen - rejected)",
                lambda c, r: -F.logsigmoid(r - c).mean(),
            ),
            Mistake(
                "log(sigmoid(x)) underflows to -inf for a very negative x: "
                "use F.logsigmoid",
                lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(),
            ),
            Mistake(
                "take the mean over the pairs, not the sum",
                lambda c, r: -F.logsigmoid(c - r).sum(),
            ),
        ],
    )
)


def dpo_reference(pc, pr, rc, rr, beta):
    return dpo_loss(pc, pr, rc, rr, beta)[0]


def _dpo_cases() -> list[Case]:
    pc, pr = -seeded_randn(5).abs() * 20, -seeded_randn(5, seed=1).abs() * 20
    rc, rr = -seeded_randn(5, seed=2).abs() * 20, -seeded_randn(5, seed=3).abs() * 20
    return [
        Case("5 pairs, beta 0.1", (pc, pr, rc, rr, 0.1)),
        Case(
            "the policy equal to the reference (the loss is log 2)",
            (pc, pr, pc, pr, 0.1),
        ),
        Case("5 pairs, beta 0.5", (pc, pr, rc, rr, 0.5)),
    ]


register(
    Exercise(
        "dpo_loss",
        "08",
        "The DPO loss: implicit rewards beta * (log pi - log pi_ref)",
        "medium",
        "dpo_loss(policy_chosen, policy_rejected, reference_chosen, "
        "reference_rejected, beta) -> loss   # summed log-probs per answer",
        dpo_reference,
        _dpo_cases,
        [
            Mistake(
                "each reward is measured against the reference: "
                "beta * (log pi(answer) - log pi_ref(answer))",
                lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(),
            ),
            Mistake(
                "beta scales the rewards inside the sigmoid, not the loss outside it",
                lambda pc, pr, rc, rr, b: (
                    -b * F.logsigmoid((pc - rc) - (pr - rr)).mean()
                ),
            ),
            Mistake(
                "the chosen answer's reward comes first: "
                "sigmoid(reward_chosen - reward_rejected)",
                lambda pc, pr, rc, rr, b: (
                    -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean()
                ),
            ),
        ],
    )
)


# ---------------------------------------------------------------- more of 05, 07, 08


def _penalty_cases() -> list[Case]:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0], [0.1, 0.2, -0.4, 1.5, -2.0]])
    previous = torch.tensor([[0, 1], [3, 2]])
    return [
        Case(
            "positive and negative logits of repeated tokens, penalty 1.3",
            (logits, previous, 1.3),
        )
    ]


def penalty_reference(logits, previous, penalty):
    return next_token_probs(logits, repetition_penalty=penalty, previous=previous)


def _penalize_all_by_division(logits, previous, penalty):
    logits = logits.clone()
    seen = torch.gather(logits, 1, previous)
    return logits.scatter(1, previous, seen / penalty).softmax(-1)


register(
    Exercise(
        "repetition_penalty",
        "05",
        "Repetition penalty: make tokens already in the text less likely",
        "medium",
        "repetition_penalty(logits, previous, penalty) -> probabilities   "
        "# previous: (batch, n) ids",
        penalty_reference,
        _penalty_cases,
        [
            Mistake(
                "dividing a negative logit by the penalty makes the token MORE likely: "
                "divide positive logits, multiply negative ones",
                _penalize_all_by_division,
            ),
        ],
    )
)


def _top_k_cases() -> list[Case]:
    logits = 2 * seeded_randn(2, 12, seed=7)
    return [Case(f"k = {k} of 12 tokens", (logits, k)) for k in (1, 3, 12)]


def _top_k_without_renormalizing(logits, k):
    probs = logits.softmax(-1)
    kth = probs.topk(k, dim=-1).values[:, -1:]
    return probs.masked_fill(probs < kth, 0.0)


register(
    Exercise(
        "top_k",
        "05",
        "Top-k sampling: keep only the k most likely tokens",
        "easy",
        "top_k(logits, k) -> probabilities",
        lambda logits, k: next_token_probs(logits, top_k=k),
        _top_k_cases,
        [
            Mistake(
                "after dropping tokens, renormalize (or mask the logits with -inf "
                "before the softmax) so the probabilities add up to 1",
                _top_k_without_renormalizing,
            ),
        ],
    )
)


def _pairwise_cases() -> list[Case]:
    return [
        Case("8 pairs", (seeded_randn(8), seeded_randn(8, seed=1))),
        Case(
            "pairs with tied rewards (a tie is not a win)",
            (torch.tensor([1.0, 0.5, 2.0, 0.0]), torch.tensor([1.0, 0.7, 1.0, 0.0])),
        ),
    ]


register(
    Exercise(
        "pairwise_accuracy",
        "07",
        "A reward model's accuracy: how often the chosen answer scores higher",
        "easy",
        "pairwise_accuracy(chosen_rewards, rejected_rewards) -> float",
        lambda c, r: float((c > r).float().mean()),
        _pairwise_cases,
        [
            Mistake(
                "a tie is not a win: count chosen > rejected, not >=",
                lambda c, r: float((c >= r).float().mean()),
            ),
        ],
    )
)


register(
    Exercise(
        "implicit_rewards",
        "08",
        "DPO's implicit rewards: how far the policy moved from the reference",
        "easy",
        "implicit_rewards(policy_chosen, policy_rejected, reference_chosen, "
        "reference_rejected, beta) -> (chosen_reward, rejected_reward)",
        lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b)[1:],
        _dpo_cases,
        [
            Mistake(
                "a reward is beta * (log pi - log pi_ref): the policy's log-prob minus "
                "the reference's",
                lambda pc, pr, rc, rr, b: (b * (rc - pc), b * (rr - pr)),
            ),
            Mistake(
                "multiply by beta",
                lambda pc, pr, rc, rr, b: (pc - rc, pr - rr),
            ),
        ],
    )
)
