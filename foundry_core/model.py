"""A decoder-only Transformer with the architecture of the LLaMA family.

Read it top to bottom: attention (grouped-query, with a KV cache) and its causal masks,
the pre-norm block, and the model that stacks them. The parts they are built from,
RMSNorm, rotary position embedding and the SwiGLU MLP, are in layers.py; the KV cache is
in kv_cache.py. Module and parameter names follow Hugging Face's Llama so that a
checkpoint converts by renaming nothing (see export.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig

# kv_cache_bytes is not used here: it is imported so that the chapters and the tests
# can import every part of the model, the cache and the layers included, from here.
from .kv_cache import KVCache, kv_cache_bytes  # noqa: F401
from .layers import MLP, RMSNorm, apply_rope, rope_tables
from .losses import linear_cross_entropy
from .model_checks import check_attention_mask, check_token_ids, check_weights_fit


class Attention(nn.Module):
    """Causal self-attention with grouped-query attention (GQA).

    n_heads query heads share n_kv_heads key/value heads, in groups of
    n_heads // n_kv_heads: 1 KV head is multi-query attention (MQA), n_heads KV heads is
    classic multi-head attention. Fewer KV heads shrink the KV cache, which dominates
    memory when generating long texts.
    """

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.q_proj = nn.Linear(
            config.d_model, config.n_heads * config.head_dim, bias=False
        )
        self.k_proj = nn.Linear(config.d_model, config.kv_dim, bias=False)
        self.v_proj = nn.Linear(config.d_model, config.kv_dim, bias=False)
        self.o_proj = nn.Linear(
            config.n_heads * config.head_dim, config.d_model, bias=False
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        need_weights: bool = False,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer_idx, k, v)
        if need_weights:
            out, weights = explicit_attention(q, k, v, past)
        elif fp32_attention(q):
            with torch.autocast("cpu", enabled=False):
                out = self._sdpa(q.float(), k.float(), v.float(), past, key_mask)
            out, weights = out.to(q.dtype), None
        else:
            out, weights = self._sdpa(q, k, v, past, key_mask), None
        out = out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim)
        return self.o_proj(out), weights

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, (batch, heads, seq, head_dim), queries and keys
        turned by RoPE. The inference engine (engine.py) calls it too."""
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _sdpa(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        past: int,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        seq = q.shape[2]
        # enable_gqa: each group of n_heads // n_kv_heads query heads reads the same
        # key/value head inside the fused kernel, without materialising repeated copies
        # of k and v.
        gqa = self.n_kv_heads != self.n_heads
        # A padded batch: the causal mask, with the padding keys hidden.
        if key_mask is not None:
            mask = padded_causal_mask(key_mask, seq, past)
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa
            )
        # A fresh sequence: the fused kernel applies the causal mask itself.
        if past == 0:
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, enable_gqa=gqa
            )
        # New tokens after cached ones: query i, at position past + i, sees keys
        # 0 .. past + i.
        mask = None if seq == 1 else causal_mask(seq, past + seq, past, q.device)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa
        )


def fp32_attention(q: torch.Tensor) -> bool:
    """Should this bf16 attention run in fp32? Yes on a CPU under autocast.

    PyTorch's fused CPU kernel is slower in bf16 than in fp32 there, its backward pass
    above all (benchmarks/README.md), and fp32 is also the more precise of the two.
    """
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and torch.is_autocast_enabled("cpu")
    )


def causal_mask(
    n_queries: int, n_keys: int, offset: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """True where query i may attend to key j: j <= offset + i.

    Query i sits at position offset + i, after `offset` cached positions.
    """
    rows = torch.arange(n_queries, device=device)[:, None] + offset
    return torch.arange(n_keys, device=device)[None, :] <= rows


def padded_causal_mask(
    key_mask: torch.Tensor, n_queries: int, offset: int = 0
) -> torch.Tensor:
    """Causal mask (batch, 1, queries, keys) that also hides the padding keys.

    Padding keys are those where key_mask is False. A padding query would then see no
    key at all, and softmax over nothing is NaN; letting every query see itself avoids
    that. Padding outputs are never read, so what they compute does not matter.
    """
    allowed = causal_mask(n_queries, key_mask.shape[1], offset, key_mask.device)
    keys = torch.arange(key_mask.shape[1], device=key_mask.device)
    itself = keys[None, :] == (
        torch.arange(n_queries, device=key_mask.device)[:, None] + offset
    )
    return (allowed & key_mask[:, None, None, :]) | itself


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + causal mask) v, written out.

    Unlike the fused kernel, it returns the weights, so that they can be looked at.
    """
    # Under GQA, repeat each key/value head for its query heads.
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    allowed = causal_mask(q.shape[2], k.shape[2], past, q.device)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x)).

    Normalising the input of each branch, not the sum, keeps a clean identity path from
    the first layer to the last, which is what lets deep stacks train without careful
    warm-up.
    """

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        need_weights: bool = False,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.self_attn(
            self.input_layernorm(x), cos, sin, cache, need_weights, key_mask
        )
        x = x + self.dropout(attn_out)
        x = x + self.dropout(self.mlp(self.post_attention_layernorm(x)))
        return x, weights


class Transformer(nn.Module):
    """Token embedding, n_layers pre-norm blocks, a final RMSNorm and the LM head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:  # one matrix both reads tokens in and scores them out
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        # Scaled residual init (GPT-2): each block adds two outputs to the residual
        # stream, so shrink the projections that write into it to keep its variance
        # from growing with depth.
        for block in self.layers:
            for proj in (block.self_attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(
                    proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers)
                )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits, or the training loss when targets are given.

        Without targets: (logits, None), logits of shape (batch, seq, vocab) for ids of
        shape (batch, seq). With targets (batch, seq): (None, mean next-token
        cross-entropy). Training never needs the full logits, so the loss is computed
        chunk by chunk without them (losses.linear_cross_entropy). Positions whose
        target is -100 are ignored, e.g. the prompt tokens in SFT.

        attention_mask (batch, past + seq), True on real tokens, lets a batch hold
        sequences of different lengths padded on the left: padding is hidden from
        attention and each sequence's positions start at its first real token, so every
        row computes what it would compute alone.

        last_only: logits of the last position only, (batch, 1, vocab). Generation
        needs no others, and the LM head over every position of a long prompt costs
        seq times as much.
        """
        x = self._run(idx, cache, need_weights=False, attention_mask=attention_mask)[0]
        if targets is None:
            return self.lm_head(x[:, -1:] if last_only else x), None
        if targets.shape != idx.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} "
                f"must match ids shape {tuple(idx.shape)}"
            )
        return None, linear_cross_entropy(
            x.flatten(0, 1), self.lm_head.weight, targets.flatten()
        )

    def hidden_states(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final (normalised) hidden state of every position, (batch, seq, d_model).

        The LM head reads it, and so does a reward model's scalar head instead.
        """
        x, _ = self._run(idx, None, need_weights=False, attention_mask=attention_mask)
        return x

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights (batch, n_heads, seq, seq) of every layer.

        They come from the explicit path, since the fused kernel never stores them.
        """
        return self._run(idx, None, need_weights=True)[1]

    def _run(
        self,
        idx: torch.Tensor,
        cache: KVCache | None,
        need_weights: bool,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        past = cache.length if cache is not None else 0
        check_token_ids(idx, self.config, past)
        seq = idx.shape[1]
        cos, sin = self.rope_cos[past : past + seq], self.rope_sin[past : past + seq]
        if attention_mask is not None:
            check_attention_mask(attention_mask, (idx.shape[0], past + seq))
            attention_mask = attention_mask.bool()
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
            cos = self.rope_cos[positions][:, None]
            sin = self.rope_sin[positions][:, None]
        x = self.dropout(self.embed_tokens(idx))
        maps = []
        for block in self.layers:
            if self.gradient_checkpointing and self.training and cache is None:
                # Keep only the block's input; recompute its insides during the
                # backward pass.
                x, weights = checkpoint(
                    block,
                    x,
                    cos,
                    sin,
                    None,
                    need_weights,
                    attention_mask,
                    use_reentrant=False,
                )
            else:
                x, weights = block(x, cos, sin, cache, need_weights, attention_mask)
            if weights is not None:
                maps.append(weights)
        if cache is not None:
            cache.length += seq
        return self.norm(x), maps

    def param_counts(self) -> dict[str, int]:
        """Parameters by component, counted from the live modules.

        A weight shared by two modules (tied embeddings) is counted once.
        """
        counts = {
            "embedding": self.embed_tokens.weight.numel(),
            "attention": 0,
            "mlp": 0,
            "norms": self.norm.weight.numel(),
            "lm_head": 0,
        }
        if self.lm_head.weight is not self.embed_tokens.weight:
            counts["lm_head"] = self.lm_head.weight.numel()
        for block in self.layers:
            counts["attention"] += sum(p.numel() for p in block.self_attn.parameters())
            counts["mlp"] += sum(p.numel() for p in block.mlp.parameters())
            counts["norms"] += (
                block.input_layernorm.weight.numel()
                + block.post_attention_layernorm.weight.numel()
            )
        return counts

    def num_params(self) -> int:
        # parameters() yields a shared tensor once.
        return sum(p.numel() for p in self.parameters())

    def load_weights(
        self, state: dict[str, torch.Tensor], source: str = "checkpoint"
    ) -> None:
        """load_state_dict with one readable error if the weights do not fit.

        The error lists every missing, unexpected or misshapen tensor.
        """
        own = self.state_dict()
        if self.config.tie_embeddings:
            own.pop("lm_head.weight", None)
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        check_weights_fit(own, state, self.config, source)
        self.load_state_dict(state, strict=not self.config.tie_embeddings)
