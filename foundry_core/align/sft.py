"""Supervised fine-tuning: next-token training on chats, with the loss on the
assistant's tokens only.

The model already knows the language from pretraining; SFT teaches it the format of a
conversation and the kind of answers wanted. Training on the prompt tokens too would
spend capacity on predicting the user's questions, which the model never has to write,
so their targets are set to -100 (ignored). Batches are padded to their longest chat;
the padding's targets are ignored as well.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..sequences import IGNORE, pad_right
from ..tokenizer import Tokenizer
from .chat import CHATML, ChatTemplate, Message, encode_chat
from .tasks import Example


def example_chat(example: Example) -> list[Message]:
    return [
        {"role": "user", "content": example.prompt},
        {"role": "assistant", "content": example.answer},
    ]


def sft_targets(
    ids: Sequence[int], trained: Sequence[bool]
) -> tuple[list[int], list[int]]:
    """Inputs and targets for next-token training: position i predicts token i + 1,
    which counts only if that token is trained (assistant content or end-of-turn)."""
    return list(ids[:-1]), [
        t if keep else IGNORE for t, keep in zip(ids[1:], trained[1:])
    ]


class ChatDataset(Dataset):
    """Tokenized chats as (inputs, targets); chats longer than the context are dropped
    and counted."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chats: Sequence[Sequence[Message]],
        max_len: int,
        template: str | ChatTemplate = CHATML,
    ):
        self.items, self.dropped = [], 0
        for chat in chats:
            ids, trained = encode_chat(tokenizer, chat, template)
            if len(ids) - 1 > max_len:
                self.dropped += 1
                continue
            self.items.append(sft_targets(ids, trained))
        if not self.items:
            raise ValueError(
                f"all {self.dropped} chats are longer than the context "
                f"({max_len} tokens)"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.items[i]

    @staticmethod
    def collate(
        batch: Sequence[tuple[list[int], list[int]]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = zip(*batch)
        return pad_right(inputs, 0), pad_right(targets, IGNORE)
