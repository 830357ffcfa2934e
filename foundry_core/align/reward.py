"""A reward model: the pretrained Transformer with a scalar head, trained on preference
pairs.

It reads a whole chat and outputs one number, read at the last token (by then the model
has seen the prompt and the full answer). Bradley-Terry models the chance that a person
prefers answer a over b as sigmoid(r(a) - r(b)); maximising the likelihood of the
observed preferences gives the loss below. Only the difference of rewards matters, so
their absolute level is arbitrary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Transformer
from ..sequences import pad_right
from ..tokenizer import Tokenizer
from .chat import CHATML, ChatTemplate, encode_chat


class RewardModel(nn.Module):
    def __init__(self, backbone: Transformer):
        super().__init__()
        self.backbone, self.config = backbone, backbone.config
        self.score = nn.Linear(backbone.config.d_model, 1, bias=False)
        nn.init.zeros_(self.score.weight)  # start neutral: every answer scores 0

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One reward per sequence, (batch,), read at each sequence's last real token
        (right padding)."""
        hidden = self.backbone.hidden_states(ids)
        last = hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        return self.score(last).squeeze(-1).float()

    def load_weights(
        self, state: dict[str, torch.Tensor], source: str = "checkpoint"
    ) -> None:
        prefix = "backbone."
        self.backbone.load_weights(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)},
            source,
        )
        if "score.weight" not in state:
            raise ValueError(
                f"{source} has no reward head (score.weight): "
                "is it a reward model checkpoint?"
            )
        self.score.weight.data.copy_(state["score.weight"])


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: small when the chosen answers
    outscore the rejected ones."""
    return -F.logsigmoid(chosen - rejected).mean()


def reward_loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, dict]:
    """Loss function for the Trainer on PairDataset batches, with pairwise accuracy and
    mean margin."""
    ids, _, lengths = batch[:3]
    rewards = model(ids, lengths)
    chosen, rejected = rewards.chunk(2)
    margin = (chosen - rejected).detach()
    return bradley_terry_loss(chosen, rejected), {
        "accuracy": (margin > 0).float().mean(),
        "margin": margin.mean(),
    }


@torch.no_grad()
def score_pairs(
    model: RewardModel, dataset, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen and the rejected answer of every pair in a PairDataset."""
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(dataset), batch_size):
        ids, _, lengths = dataset.collate(
            [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        )[:3]
        c, r = model(ids.to(device), lengths.to(device)).cpu().chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def score_answers(
    model: RewardModel,
    tokenizer: Tokenizer,
    prompts: list[str],
    answers: list[str],
    template: str | ChatTemplate = CHATML,
    batch_size: int = 64,
) -> torch.Tensor:
    """The reward of each (prompt, answer), e.g. of answers a policy generated."""
    model.eval()
    device = next(model.parameters()).device
    rows = [
        encode_chat(
            tokenizer,
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
            template,
        )[0]
        for p, a in zip(prompts, answers)
    ]
    too_long = [i for i, r in enumerate(rows) if len(r) > model.config.max_seq_len]
    if too_long:
        raise ValueError(
            f"{len(too_long)} answers do not fit the context "
            f"({model.config.max_seq_len} tokens), "
            f"the first is number {too_long[0]}"
        )
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        lengths = torch.tensor([len(r) for r in chunk], device=device)
        out.append(model(pad_right(chunk, 0).to(device), lengths).cpu())
    return torch.cat(out)
