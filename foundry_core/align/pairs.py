"""Preference pairs as tensors: the reward model and DPO both read a chosen and a
rejected chat."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..sequences import pad_right
from ..tokenizer import Tokenizer
from .chat import CHATML, ChatTemplate, encode_chat
from .tasks import PreferencePair, drop_ties


class PairDataset(Dataset):
    """Each pair encoded twice (prompt + chosen, prompt + rejected), with the
    answer-token mask.

    A batch stacks the B chosen chats, then the B rejected ones: (ids (2B, L), answer
    mask (2B, L), lengths (2B,)), so one forward pass scores both halves. Pairs with
    identical answers and pairs too long for the context are dropped; `dropped` counts
    them by reason.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        pairs: Sequence[PreferencePair],
        max_len: int,
        template: str | ChatTemplate = CHATML,
    ):
        pairs, ties = drop_ties(pairs)
        self.dropped = {"identical answers": ties, "too long": 0}
        self.pairs, self.items = [], []
        for pair in pairs:
            encoded = [
                encode_chat(
                    tokenizer,
                    [
                        {"role": "user", "content": pair.prompt},
                        {"role": "assistant", "content": answer},
                    ],
                    template,
                )
                for answer in (pair.chosen, pair.rejected)
            ]
            if max(len(ids) for ids, _ in encoded) > max_len:
                self.dropped["too long"] += 1
                continue
            self.pairs.append(pair)
            self.items.append(encoded)
        if not self.items:
            raise ValueError(f"no usable preference pairs (dropped: {self.dropped})")
        # (len, 2) log-probs under the reference model, for DPO
        self.reference: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        ref = self.reference[i] if self.reference is not None else None
        return self.items[i], ref

    @staticmethod
    def collate(batch) -> tuple[torch.Tensor, ...]:
        rows = [chosen for (chosen, _), _ in batch] + [
            rejected for (_, rejected), _ in batch
        ]
        ids = pad_right([r[0] for r in rows], 0)
        answer = pad_right([[int(t) for t in r[1]] for r in rows], 0).bool()
        lengths = torch.tensor([len(r[0]) for r in rows])
        if batch[0][1] is None:
            return ids, answer, lengths
        refs = torch.stack([ref for _, ref in batch])  # (B, 2)
        return ids, answer, lengths, torch.cat([refs[:, 0], refs[:, 1]])
