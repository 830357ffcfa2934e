"""The KV cache: what generation keeps between steps, and what that costs in memory.

Training never uses it, so it lives apart from model.py; attention only calls
`update`. model.py imports both names back, so `from foundry_core.model import KVCache`
keeps working.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


class KVCache:
    """Keys and values of the tokens seen so far.

    Each new token attends to them without recomputing them. Preallocated for `max_len`
    positions: generation writes in place instead of concatenating.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.max_len = max_len or config.max_seq_len
        if self.max_len > config.max_seq_len:
            raise ValueError(
                f"KVCache max_len ({self.max_len}) exceeds the model's max_seq_len "
                f"({config.max_seq_len})"
            )
        shape = (
            config.n_layers,
            batch_size,
            config.n_kv_heads,
            self.max_len,
            config.head_dim,
        )
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        # Positions filled; the model advances it after all layers have written.
        self.length = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for `layer`; return all of them so far."""
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def rewind(self, positions: int) -> None:
        """Forget the last `positions` positions: the next update overwrites them.

        Speculative decoding (speculative.py) stores keys for drafted tokens that the
        model then rejects; rewinding drops them without copying anything.
        """
        if not 0 <= positions <= self.length:
            raise ValueError(
                f"cannot rewind {positions} of the {self.length} cached positions"
            )
        self.length -= positions

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


def kv_cache_bytes(
    config: ModelConfig, batch_size: int, seq_len: int, bytes_per_value: int = 2
) -> int:
    """Memory of a KV cache, in bytes.

    Keys and values for every layer, KV head, position and head dimension.
    """
    return (
        2
        * config.n_layers
        * batch_size
        * config.n_kv_heads
        * seq_len
        * config.head_dim
        * bytes_per_value
    )
