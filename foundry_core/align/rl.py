"""Reinforcement learning on the Trainer's loop: PPO with a critic, and GRPO.

One step of either: the policy answers a batch of prompts (several samples each),
every answer gets a reward (the reward model's score, or a rule that checks it), the
rewards become advantages, and the policy takes a few clipped gradient steps on those
same answers. PPO (Schulman et al. 2017; as in InstructGPT, Ouyang et al. 2022) learns
a critic to say what reward each token should expect and subtracts the KL to the
reference from the reward; GRPO (Shao et al. 2024) drops the critic and compares each
answer with the other answers to the same prompt, with the KL as a term of the loss.

Everything else is the Trainer's: the schedule, clipping, mixed precision, history,
checkpoints (the random generators included, so sampling resumes exactly) and the
progress bar. The arithmetic is in policy_gradient.py, sampling in rollout.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import TrainConfig
from ..model import Transformer
from ..tokenizer import Tokenizer
from ..train import Trainer
from .chat import CHATML, ChatTemplate
from .policy_gradient import (
    answer_mean,
    approx_kl,
    clipped_objective,
    gae,
    group_advantages,
    informative_rows,
    masked_mean,
    scores_from_logits,
    token_scores,
)
from .respond import answer
from .rollout import Rollouts, rollout
from .tasks import Example

# A reward function scores answers: (the examples they answer, the answers) -> (n,)
RewardFn = Callable[[Sequence[Example], Sequence[str]], torch.Tensor]
ALGORITHMS = ("grpo", "ppo")


@dataclass(frozen=True)
class RLConfig:
    """What an RL step does, beside the TrainConfig's optimizer and schedule (whose
    batch_size is the number of prompts per step)."""

    algorithm: str = "grpo"  # "grpo" or "ppo"
    group_size: int = 8  # answers sampled per prompt (GRPO's group)
    epochs: int = 2  # passes over each batch of answers
    minibatches: int = 2  # optimizer steps per pass
    clip: float = 0.2  # how far one step may move each token's probability ratio
    # GRPO: weight of the KL term in the loss; PPO: the KL penalty in the reward
    kl_coef: float = 0.05
    temperature: float = 1.0
    max_new_tokens: int = 16
    gamma: float = 1.0  # PPO: discount over an answer's tokens
    lam: float = 0.95  # PPO: GAE's trade-off between the critic and the returns
    value_coef: float = 0.5  # PPO: weight of the critic's loss
    # GRPO: divide each group's advantages by its spread (True: the original GRPO;
    # False: Dr. GRPO, Liu et al. 2025, which the course uses)
    scale_advantages: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"unknown RL algorithm '{self.algorithm}': use one of "
                f"{', '.join(ALGORITHMS)}"
            )
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0 (0: no KL), got {self.kl_coef}")
        if self.algorithm == "grpo" and self.group_size < 2:
            raise ValueError(
                "GRPO compares the answers to one prompt: group_size must be at least "
                f"2, got {self.group_size}"
            )
        for name in ("group_size", "epochs", "minibatches", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"RLConfig.{name} must be at least 1")
        if not 0 < self.clip < 1:
            raise ValueError(f"clip must lie in (0, 1), got {self.clip}")


class PolicyWithValue(Transformer):
    """The policy and PPO's critic in one network: a value head reads the same final
    hidden states as the LM head and predicts the reward still to come."""

    def __init__(self, config):
        super().__init__(config)
        self.value_head = nn.Linear(config.d_model, 1)
        nn.init.zeros_(self.value_head.weight)  # the critic starts expecting 0
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_policy(cls, policy: Transformer) -> PolicyWithValue:
        """A copy of `policy` with a fresh value head."""
        model = cls(policy.config).to(next(policy.parameters()).device)
        model.load_weights(
            {**policy.state_dict(), **model.value_head_state()}, "the policy"
        )
        return model

    def value_head_state(self) -> dict[str, torch.Tensor]:
        return {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()}

    def scores_and_values(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """token_scores (log-probability, entropy) and the critic's value, (n, seq - 1)
        each, from one forward pass."""
        hidden = self.hidden_states(ids[:, :-1])
        chosen, entropy = scores_from_logits(self.lm_head(hidden), ids)
        return chosen, entropy, self.value_head(hidden).squeeze(-1).float()


class PromptSet(Dataset):
    """The indices of the training prompts; the Trainer draws batches of them."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError("no training prompts for reinforcement learning")
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    @staticmethod
    def collate(batch: Sequence[int]) -> tuple[torch.Tensor]:
        return (torch.tensor(batch),)


@dataclass
class Experience:
    """One step's answers with everything the loss needs, per token (n, seq - 1), for
    the rows the policy learns from (GRPO drops the groups with nothing to teach)."""

    rollouts: Rollouts
    answered: list[Example]  # the example each rollout answers
    rows: torch.Tensor  # the rollouts learned from: the rows of ids, masks, ...
    ids: torch.Tensor
    mask: torch.Tensor  # True on answer tokens
    old_logp: torch.Tensor  # under the policy that sampled them
    ref_logp: torch.Tensor  # under the frozen reference
    advantages: torch.Tensor
    returns: torch.Tensor | None  # PPO: the critic's targets
    rewards: torch.Tensor  # one per rollout
    skipped_groups: int  # GRPO: groups whose answers all scored the same


class RLTrainer(Trainer):
    """PPO or GRPO: `policy` learns to earn `reward_fn` on `prompts`, staying near the
    frozen `reference` (usually the SFT model it started from).

    `watch` adds other scores of the same answers to the history, e.g. the rules'
    verdict while PPO optimises the reward model's. Every eval_interval steps the
    greedy answers to the `held_out` prompts are scored the same ways (val_reward,
    val_<watched>). For PPO the policy must be a PolicyWithValue
    (PolicyWithValue.from_policy(sft)).
    """

    def __init__(
        self,
        policy: Transformer,
        reference: Transformer,
        config: TrainConfig,
        rl: RLConfig,
        prompts: Sequence[Example],
        reward_fn: RewardFn,
        tokenizer: Tokenizer,
        template: str | ChatTemplate = CHATML,
        watch: dict[str, RewardFn] | None = None,
        held_out: Sequence[Example] = (),
        **trainer,
    ):
        if rl.algorithm == "ppo" and not isinstance(policy, PolicyWithValue):
            raise ValueError(
                "PPO needs a critic: pass PolicyWithValue.from_policy(policy)"
            )
        for name, size in (
            ("reference", reference.config.vocab_size),
            ("tokenizer", len(tokenizer)),
        ):
            if size != policy.config.vocab_size:
                raise ValueError(
                    f"the {name} has {size} tokens, the policy "
                    f"{policy.config.vocab_size}: all must use the same tokenizer"
                )
        val = PromptSet(len(held_out)) if held_out else None
        super().__init__(policy, config, PromptSet(len(prompts)), val, **trainer)
        self.reference = reference.to(self.device).eval().requires_grad_(False)
        self.rl, self.prompts, self.reward_fn = rl, list(prompts), reward_fn
        self.held_out = list(held_out)
        self.tokenizer, self.template, self.watch = tokenizer, template, watch or {}

    def train_step(self, batches) -> dict:
        """Sample and score answers to a batch of prompts, then optimise on them."""
        lr = self.set_learning_rate()
        examples = [self.prompts[i] for i in next(batches)[0].tolist()]
        experience = self.experience(examples)
        record = self._optimise(experience)
        self.step += 1
        answers = experience.rollouts
        record.update(
            step=self.step,
            lr=lr,
            reward=experience.rewards.mean().item(),
            # KL(policy || reference) of the policy that sampled this step's answers
            # (for GRPO: of the answers it learns from)
            kl=masked_mean(
                approx_kl(experience.old_logp, experience.ref_logp), experience.mask
            ).item(),
            answer_tokens=answers.answer_lengths.float().mean().item(),
            finished=answers.finished.float().mean().item(),
            tokens=answers.ids.numel(),
            **{
                name: fn(experience.answered, answers.texts).float().mean().item()
                for name, fn in self.watch.items()
            },
        )
        if self.rl.algorithm == "grpo":
            record["skipped_groups"] = experience.skipped_groups
        return record

    @torch.no_grad()
    def evaluate_metrics(self, max_batches: int | None = None) -> dict[str, float]:
        """The reward and the watched scores of the greedy answers to the held-out
        prompts (all of them: `max_batches` does not apply)."""
        self.model.eval()
        texts = answer(
            self.model,
            self.tokenizer,
            [e.prompt for e in self.held_out],
            self.template,
            self.rl.max_new_tokens,
        )
        scores = {"reward": self.reward_fn, **self.watch}
        metrics = {
            name: fn(self.held_out, texts).float().mean().item()
            for name, fn in scores.items()
        }
        self.model.train()
        return metrics

    @torch.no_grad()
    def experience(self, examples: Sequence[Example]) -> Experience:
        """Answers to `examples` from the current policy, scored, with advantages."""
        rl = self.rl
        self.model.eval()
        answers = rollout(
            self.model,
            self.tokenizer,
            [e.prompt for e in examples],
            rl.group_size,
            rl.max_new_tokens,
            rl.temperature,
            self.template,
        )
        answered = [examples[g] for g in answers.groups.tolist()]
        rewards = self.reward_fn(answered, answers.texts).float()
        keep = torch.arange(len(rewards))  # the rows the policy learns from
        if rl.algorithm == "grpo":
            per_answer, skipped = group_advantages(
                rewards, answers.groups, scale=rl.scale_advantages
            )
            # a group whose answers all scored the same has advantage 0 throughout:
            # it would only dilute the batch, so it is dropped before scoring
            keep = informative_rows(answers.groups, per_answer)
        ids = answers.ids[keep].to(self.device)
        mask = answers.answer[keep, 1:].to(self.device)
        if len(keep) == 0:  # every group was unanimous: nothing to learn this step
            empty = torch.zeros(0, ids.shape[1] - 1, device=self.device)
            return Experience(
                answers, answered, keep, ids, mask, empty, empty, empty, None,
                rewards, skipped,
            )  # fmt: skip
        with self.autocast():
            old_logp, _, values = self._scores(ids)
            ref_logp = token_scores(self.reference, ids)[0]
        if rl.algorithm == "ppo":
            advantages, returns = self._ppo_advantages(
                rewards, old_logp, ref_logp, values, mask
            )
            skipped = 0
        else:
            advantages = per_answer[keep].to(self.device)[:, None].expand_as(old_logp)
            returns = None
        return Experience(
            answers,
            answered,
            keep,
            ids,
            mask,
            old_logp,
            ref_logp,
            advantages,
            returns,
            rewards,
            skipped,
        )

    def _scores(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(log-probability, entropy, value or None) of each token under the policy."""
        if isinstance(self.model, PolicyWithValue):
            return self.model.scores_and_values(ids)
        return (*token_scores(self.model, ids), None)

    def _ppo_advantages(self, rewards, old_logp, ref_logp, values, mask):
        """Per-token rewards (the KL penalty on every token, the score on the last),
        then GAE, with the advantages whitened over the batch's answer tokens."""
        token_rewards = -self.rl.kl_coef * (old_logp - ref_logp) * mask
        last = mask.long().cumsum(-1).argmax(-1)  # each answer's last token
        rows = torch.arange(len(rewards), device=mask.device)
        token_rewards[rows, last] += rewards.to(mask.device)
        advantages, returns = gae(
            token_rewards, values, mask, self.rl.gamma, self.rl.lam
        )
        mean = masked_mean(advantages, mask)
        spread = masked_mean((advantages - mean) ** 2, mask).sqrt()
        return (advantages - mean) / (spread + 1e-6) * mask, returns

    def _optimise(self, experience: Experience) -> dict:
        """`epochs` passes over the answers in `minibatches` shuffled minibatches, one
        optimizer step each; the mean of each logged quantity."""
        logged = defaultdict(list)
        if len(experience.ids) == 0:
            return {}
        self.model.train()
        for _ in range(self.rl.epochs):
            order = torch.randperm(len(experience.ids))
            for rows in order.chunk(self.rl.minibatches):
                rows = rows.to(self.device)
                with self.autocast():
                    loss, parts = self._loss(experience, rows)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), self.config.grad_clip or float("inf")
                )
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                for name, value in {**parts, "grad_norm": grad_norm}.items():
                    logged[name].append(float(value))
        return {name: sum(v) / len(v) for name, v in logged.items()}

    def _loss(self, experience: Experience, rows: torch.Tensor):
        """The clipped policy loss, plus the KL term (GRPO) or the critic's (PPO)."""
        mask = experience.mask[rows]
        logp, entropy, values = self._scores(experience.ids[rows])
        mean = masked_mean if self.rl.algorithm == "ppo" else answer_mean
        policy_loss, clipped = clipped_objective(
            logp,
            experience.old_logp[rows],
            experience.advantages[rows],
            mask,
            self.rl.clip,
            mean,
        )
        kl = mean(approx_kl(logp, experience.ref_logp[rows]), mask)
        parts = {
            "policy_loss": policy_loss.detach(),
            "kl_term": kl.detach(),
            "entropy": masked_mean(entropy, mask).detach(),
            "clip_fraction": clipped,
        }
        if values is None:
            loss = policy_loss + self.rl.kl_coef * kl
        else:
            value_loss = 0.5 * masked_mean(
                (values - experience.returns[rows]) ** 2, mask
            )
            parts["value_loss"] = value_loss.detach()
            loss = policy_loss + self.rl.value_coef * value_loss
        parts["loss"] = loss.detach()
        return loss, parts
