"""From documents to training batches: a split without leakage, tokens on disk, windows
of tokens.

The split is by document: if one play's first half trained the model and its second
half measured it, the validation loss would reward memorising that play. Tokens go to a
flat binary file (uint16 when the vocabulary allows, else uint32) read through a memory
map, so a corpus far larger than RAM works the same way. A training example is a window
of seq_len + 1 tokens: the input is the first seq_len, the target the same window
shifted by one.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..fileio import atomic_write, atomic_write_bytes
from .sources import Document


def split_documents(
    documents: Sequence[Document], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Shuffle whole documents with a fixed seed and hold out a fraction of them (at
    least one)."""
    if not documents:
        raise ValueError(
            "cannot split an empty corpus: no documents survived loading and cleaning"
        )
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if len(documents) < 2:
        raise ValueError(
            "a train/validation split by document needs at least 2 documents"
        )
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_val = min(len(documents) - 1, max(1, round(val_fraction * len(documents))))
    val = sorted(order[:n_val])
    held_out = set(val)
    return [d for i, d in enumerate(documents) if i not in held_out], [
        documents[i] for i in val
    ]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_tokens(
    documents: Sequence[Document],
    encode: Callable[[str], list[int]],
    path: str | os.PathLike,
    vocab_size: int,
    separator: int,
) -> int:
    """Encode each document, join them with `separator` (end of document), and write
    one flat token file.

    A JSON sidecar records the dtype and count; the file appears under its final name
    only when complete. Returns the number of tokens written.
    """
    path = Path(path)
    dtype = token_dtype(vocab_size)
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        with open(tmp, "wb") as f:
            for doc in documents:
                ids = np.asarray(encode(doc.text) + [separator], dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                    raise ValueError(
                        f"token id {int(ids.max())} in {doc.name} "
                        f"is outside vocab_size {vocab_size}"
                    )
                f.write(ids.astype(dtype).tobytes())
                count += ids.size

    atomic_write(path, write)
    meta = {
        "dtype": dtype.name,
        "tokens": count,
        "vocab_size": vocab_size,
        "documents": len(documents),
    }
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta).encode())
    return count


def read_tokens(path: str | os.PathLike) -> np.memmap:
    """The token file as a read-only memory map (nothing is loaded until indexed)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(
            f"{path} (with {meta_path.name}) not found: "
            "write it with write_tokens first"
        )
    meta = json.loads(meta_path.read_text())
    if meta["tokens"] == 0:
        raise ValueError(
            f"{path} holds no tokens: the corpus it was written from was empty"
        )
    return np.memmap(
        path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["tokens"],)
    )


class TokenWindows(Dataset):
    """Windows of seq_len + 1 tokens: random starts for training, consecutive ones for
    evaluation.

    Random starts are drawn once from `seed`, so the n-th example is the same in every
    run and on every machine; strided windows tile the file without overlap, so each
    token is scored once.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        num_samples: int | None = None,
        strided: bool = False,
        seed: int = 0,
    ):
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if len(tokens) < seq_len + 1:
            raise ValueError(
                f"the corpus has {len(tokens)} tokens, "
                "fewer than one window of seq_len + 1 = "
                f"{seq_len + 1}: use a shorter seq_len or more text"
            )
        self.tokens, self.seq_len = tokens, seq_len
        last_start = len(tokens) - seq_len - 1
        if strided:
            self.starts = np.arange(0, last_start + 1, seq_len)
        else:
            count = num_samples if num_samples is not None else last_start + 1
            self.starts = np.random.default_rng(seed).integers(
                0, last_start + 1, size=count
            )

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(self.starts[i])
        window = torch.from_numpy(
            self.tokens[start : start + self.seq_len + 1].astype(np.int64)
        )
        return window[:-1], window[1:]


class Resampled(Dataset):
    """`num_samples` examples of `dataset`, in a seeded random order, epoch after epoch
    (fine-tuning sets are small: a run sees each example several times, in a different
    order each epoch)."""

    def __init__(self, dataset: Dataset, num_samples: int, seed: int = 0):
        if len(dataset) == 0:
            raise ValueError("the training set is empty: nothing to train on")
        rng = np.random.default_rng(seed)
        epochs = -(-num_samples // len(dataset))
        self.dataset = dataset
        self.order = np.concatenate(
            [rng.permutation(len(dataset)) for _ in range(epochs)]
        )[:num_samples]
        self.collate = getattr(dataset, "collate", None)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        return self.dataset[int(self.order[i])]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    start_index: int = 0,
) -> DataLoader:
    """Batches in a fixed order (padded by the dataset's `collate`, if it has one).

    Under DDP each rank takes every world_size-th example, so ranks never share an
    example. `start_index` skips examples already seen, for resuming a run where
    it stopped."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
    indices = list(range(rank, len(dataset), world_size))[start_index:]
    # A private generator: creating a loader's iterator draws a seed, which must not
    # come from the global random state (dropout's), or a resumed run would see
    # different random numbers from the original.
    return DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=getattr(dataset, "collate", None),
    )
