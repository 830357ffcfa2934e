"""Figures of chapter 9: advantages (GRPO's group baseline, GAE), PPO's clip, and the
reward model's score against the rules' as the policy moves away from SFT."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def plot_group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, advantages: torch.Tensor, ax=None
):
    """Each answer's reward (dot) and advantage (bar), the answers of one prompt side
    by side: the group's mean is each answer's baseline."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2)) if ax is None else (ax.figure, ax)
    x = torch.arange(len(rewards)) + groups  # a gap between the groups
    colors = [f"C{int(g) % 10}" for g in groups]
    ax.bar(x.tolist(), advantages.tolist(), color=colors, alpha=0.6, label="advantage")
    ax.scatter(x.tolist(), rewards.tolist(), color="black", zorder=3, s=18,
               label="reward")  # fmt: skip
    for group in groups.unique():
        members = x[groups == group]
        mean = rewards[groups == group].float().mean().item()
        ax.hlines(mean, members.min().item() - 0.4, members.max().item() + 0.4,
                  colors="grey", linestyles="--", linewidth=1)  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.6)
    names = groups.unique()
    centres = [x[groups == g].float().mean().item() for g in names]
    ax.set_xticks(centres, [f"p{int(g)}" for g in names], fontsize=8)
    ax.set_xlabel("answers, grouped by prompt (dashed: the group's mean reward)")
    ax.set_title("GRPO: each answer against the others to its prompt", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_gae_lambdas(
    advantages: dict[float, Sequence[float]], tokens: Sequence[str], ax=None
):
    """GAE's advantage of every token of one answer, one line per lambda."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2)) if ax is None else (ax.figure, ax)
    for lam, values in advantages.items():
        ax.plot(range(len(values)), list(map(float, values)), marker="o",
                label=f"lambda {lam}")  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(tokens)), tokens, fontsize=8)
    ax.set_xlabel("answer token")
    ax.set_ylabel("advantage")
    ax.set_title("GAE: how much better than the critic expected", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_clip(clip: float = 0.2):
    """PPO's clipped objective min(r A, clip(r) A) against the ratio r, for a positive
    and a negative advantage; shaded where the gradient is zero."""
    import matplotlib.pyplot as plt

    ratio = torch.linspace(0.0, 2.0, 401).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for ax, advantage in zip(axes, (1.0, -1.0)):
        plain = ratio * advantage
        clipped = ratio.clip(1 - clip, 1 + clip) * advantage
        objective = np.minimum(plain, clipped)
        ax.plot(ratio, plain, color="grey", linestyle=":", label="r * A (no clip)")
        ax.plot(ratio, objective, color="C0", linewidth=2, label="clipped objective")
        flat = (ratio > 1 + clip) if advantage > 0 else (ratio < 1 - clip)
        ax.fill_between(ratio, -2.2, 2.2, where=flat, color="C1", alpha=0.15,
                        label="gradient 0")  # fmt: skip
        ax.axvline(1, color="black", linewidth=0.6)
        ax.set_ylim(-2.2, 2.2)
        ax.set_xlabel("ratio r = p_new / p_old of a sampled token")
        ax.set_title(f"advantage A = {advantage:+.0f}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left" if advantage > 0 else "lower left")
    axes[0].set_ylabel("objective (maximised)")
    fig.tight_layout()
    return fig


def plot_overoptimisation(points: Sequence[dict], judge: str = "reward model"):
    """The reward model's mean score and the rules' accuracy of the same held-out
    answers, against the policy's KL from the reference: the first rises while the
    second does not (Gao et al. 2023). Each point: {"kl", "reward", "correct"}, and
    "step" to label it. The KL of a step is measured on that step's samples, so it
    need not grow every step: the points are not joined."""
    import matplotlib.pyplot as plt

    kl = [p["kl"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.scatter(kl, [p["reward"] for p in points], marker="o", color="C0")
    ax.set_xlabel("KL from the SFT model (nats per answer token)")
    ax.set_ylabel(f"{judge}'s score (circles)", color="C0")
    twin = ax.twinx()
    twin.scatter(kl, [p["correct"] for p in points], marker="s", color="C3")
    twin.set_ylabel("accuracy by the rules (squares)", color="C3")
    for p in points:
        if "step" in p:
            ax.annotate(f"step {p['step']}", (p["kl"], p["reward"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))  # fmt: skip
    ax.set_title(f"Over-optimisation: the {judge} is fooled", fontsize=10)
    fig.tight_layout()
    return fig
