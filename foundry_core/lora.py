"""LoRA: fine-tune a model through small low-rank adapters beside its frozen weights.

A projection's weight W (out x in) stays as it is; the layer adds (alpha / r) * B A x,
with A (r x in) and B (out x r). Only A and B train: r * (in + out) numbers instead of
out * in, and the optimizer keeps its two moments for those alone. B starts at zero, so
an adapted model starts exactly equal to its base (Hu et al. 2022). The base may be a
float nn.Linear or chapter 11's int4 QuantLinear: then the integers never change and
only the float adapters learn (QLoRA, Dettmers et al. 2023).

The token matrix (the embedding, and the LM head when tied) can have adapters too:
`embedding_rank` gives it a low-rank update, and `tokens` trains whole rows for a chat
template's own tokens (<|im_start|>, <|im_end|>). Those never occur in pretraining text,
so their vectors are still what initialisation and the softmax's push-down left, and no
low-rank update of the projections teaches a model to read or write them (PEFT calls
such rows "trainable tokens"). Chapter 6 shows the base model's view of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open, save_file

from .quantize import QuantLinear

# the projections of a block that can carry an adapter (names as in model.py)
PROJECTIONS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def check_rank(rank: int, in_features: int, out_features: int) -> None:
    """A rank from 1 to the layer's smaller side (above it B A is not low-rank)."""
    width = min(in_features, out_features)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= width:
        raise ValueError(
            f"LoRA rank must be an integer from 1 to {width} (the layer's "
            f"{out_features} x {in_features} weight), got {rank!r}"
        )


class _FrozenIntLinear(torch.autograd.Function):
    """x W^T for a frozen int4/int8 layer that keeps the integers, not the float
    weight, for the backward pass, and dequantizes them again there. A plain F.linear
    would save each layer's float copy until the backward pass: as many float weights
    as the float model, which is what QLoRA means to avoid."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QuantLinear) -> torch.Tensor:
        ctx.layer, ctx.dtype = layer, x.dtype
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            weight = layer.dequantize(dtype)
            bias = None if layer.bias is None else layer.bias.to(weight.dtype)
            return F.linear(x.to(weight.dtype), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        weight = ctx.layer.dequantize(grad.dtype)
        return (grad @ weight).to(ctx.dtype), None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in here (x's own dtype without it)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class LoRALinear(nn.Module):
    """A frozen linear layer (float or quantized) plus a trainable low-rank update."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        check_rank(rank, base.in_features, base.out_features)
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        stored = base.qweight if isinstance(base, QuantLinear) else base.weight
        device = stored.device
        # A starts random like a Linear's weight, B at zero: B A = 0 at the start
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device))
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta(self) -> torch.Tensor:
        """The adapters' change to the weight, (alpha / r) * B A, as a full matrix."""
        return self.scale * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, QuantLinear) and torch.is_grad_enabled():
            out = _FrozenIntLinear.apply(x, self.base)
        else:
            out = self.base(x)
        if self.merged:
            return out
        low_rank = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return out + self.scale * low_rank

    @torch.no_grad()
    def merge(self) -> None:
        """Add B A into the float weight: one matrix again, no extra work per token."""
        if isinstance(self.base, QuantLinear):
            raise ValueError(
                "cannot merge adapters into int weights (rounding would erase them): "
                "merge_lora(model) replaces the layer by a float one first"
            )
        if not self.merged:
            self.base.weight += self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take B A back out of the weight, so that the adapters can train on."""
        if self.merged:
            self.base.weight -= self.delta().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


class TokenAdapter(nn.Module):
    """The frozen token matrix (the embedding, or the LM head) with a trainable change:
    a low-rank update (alpha / rank) B A over every token's vector, and whole rows for
    `token_ids`, tokens the base never saw. Both start at no change. `like` makes a
    tied head use the embedding's very parameters."""

    def __init__(
        self,
        base: nn.Embedding | nn.Linear,
        token_ids: Sequence[int] = (),
        rank: int = 0,
        alpha: float = 1.0,
        like: TokenAdapter | None = None,
    ):
        super().__init__()
        self.base = base.requires_grad_(False)
        weight = base.weight.detach()
        ids = torch.tensor(sorted(token_ids), dtype=torch.long, device=weight.device)
        self.register_buffer("lora_token_ids", ids)
        self.rank, self.scale = rank, alpha / rank if rank else 0.0
        if like is not None:
            self.lora_rows, self.lora_A, self.lora_B = (
                like.lora_rows, like.lora_A, like.lora_B
            )  # fmt: skip
            return
        self.lora_rows = nn.Parameter(weight[ids].clone()) if len(ids) else None
        self.lora_A = self.lora_B = None
        if rank:  # as for an embedding in PEFT: A at zero, B random, B A = 0
            vocab, width = weight.shape
            self.lora_A = nn.Parameter(torch.zeros(rank, width, device=weight.device))
            self.lora_B = nn.Parameter(torch.randn(vocab, rank, device=weight.device))

    @property
    def weight(self) -> torch.Tensor:
        """The base matrix with the change applied (a new tensor: the base stays)."""
        weight = self.base.weight
        if self.lora_A is not None:
            weight = weight + self.scale * self.lora_B @ self.lora_A
        if self.lora_rows is not None:
            weight = weight.index_copy(0, self.lora_token_ids, self.lora_rows)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Embedding):
            return F.embedding(x, self.weight)
        return F.linear(x, self.weight)


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    tokens: Sequence[int] = (),
    embedding_rank: int = 0,
) -> nn.Module:
    """Freeze every weight of `model` and wrap the `targets` projections of each block
    in a LoRALinear (in place). With `tokens`, those rows of the embedding and LM head
    train too; with `embedding_rank`, a low-rank update of that matrix. Return the
    model. Every name, id and rank is checked before anything changes."""
    unknown = sorted(set(targets) - set(PROJECTIONS))
    if unknown or not targets:
        raise ValueError(
            f"unknown projection(s) {unknown or list(targets)}: "
            f"choose among {', '.join(PROJECTIONS)}"
        )
    if lora_layers(model) or token_adapters(model):
        raise ValueError("this model already has LoRA adapters")
    tokens = sorted(set(tokens))
    vocab = model.embed_tokens.weight.shape[0] if tokens else 0
    if any(isinstance(t, bool) or not 0 <= t < vocab for t in tokens):
        raise ValueError(f"token ids must lie in 0..{vocab - 1}, got {tokens}")
    chosen = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if name in targets
    ]
    for _, _, child in chosen:  # a bad rank fails here, before any layer is wrapped
        check_rank(rank, child.in_features, child.out_features)
    if embedding_rank:
        check_rank(embedding_rank, *model.embed_tokens.weight.shape)
    model.requires_grad_(False)
    for parent, name, child in chosen:
        setattr(parent, name, LoRALinear(child, rank, alpha, dropout))
    if tokens or embedding_rank:
        tied = model.lm_head.weight is model.embed_tokens.weight
        change = dict(token_ids=tokens, rank=embedding_rank, alpha=alpha)
        model.embed_tokens = TokenAdapter(model.embed_tokens, **change)
        like = model.embed_tokens if tied else None
        model.lm_head = TokenAdapter(model.lm_head, **change, like=like)
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def token_adapters(model: nn.Module) -> dict[str, TokenAdapter]:
    return {n: m for n, m in model.named_modules() if isinstance(m, TokenAdapter)}


def trainable_share(model: nn.Module) -> float:
    """The share of the model's weights that train; an int layer's weights count
    too, though they are buffers, not parameters."""
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    ints = sum(
        m.in_features * m.out_features
        for m in model.modules()
        if isinstance(m, QuantLinear)
    )
    return trained / (sum(p.numel() for p in params) + ints)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer and remove the wrappers (in place): a plain
    model again, for export or fast inference. A quantized base becomes a float
    Linear holding the dequantized weight plus the adapters' update."""
    for name, layer in lora_layers(model).items():
        base = layer.base
        if isinstance(base, QuantLinear):
            weight = base.dequantize()
            base = nn.Linear(layer.in_features, layer.out_features, bias=False)
            base.weight.copy_(weight)
            base.to(weight.device)
        if not layer.merged:
            base.weight += layer.delta().to(base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, base.requires_grad_(True))
    merged = set()
    for name, wrapper in token_adapters(model).items():
        if id(wrapper.base.weight) not in merged:  # a tied pair is merged once
            wrapper.base.weight.copy_(wrapper.weight)
            merged.add(id(wrapper.base.weight))
        setattr(model, name, wrapper.base.requires_grad_(True))
    return model


def base_fingerprint(model: nn.Module) -> str:
    """A short hash of the frozen base weights (adapters excluded), naming the base an
    adapter belongs to."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" in name:
            continue
        digest.update(name.replace(".base.", ".").encode())
        digest.update(tensor.detach().cpu().flatten().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """What trains and what an adapter file holds: every A and B, and the token
    matrix's (a tied pair counted once), by name."""
    parts = ("lora_A", "lora_B", "lora_rows")
    return {n: p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in parts}


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters alone (safetensors) with their settings and the base's
    fingerprint."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("this model has no LoRA adapters to save")
    first = next(iter(layers.values()))
    tensors = {
        name: param.detach().cpu().contiguous()
        for name, param in adapter_parameters(model).items()
    }
    token_matrix = next(iter(token_adapters(model).values()), None)
    tokens = [] if token_matrix is None else token_matrix.lora_token_ids.tolist()
    metadata = {
        "rank": str(first.rank),
        "alpha": str(first.alpha),
        "targets": json.dumps(sorted({name.rsplit(".", 1)[-1] for name in layers})),
        "tokens": json.dumps(tokens),
        "embedding_rank": str(0 if token_matrix is None else token_matrix.rank),
        "base": base_fingerprint(model),
    }
    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Put saved adapters on `model` (wrapping it first if it has none). Refuses, with
    a clear error, another base or adapters of another rank or on other layers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    rank, targets = int(meta["rank"]), json.loads(meta["targets"])
    if base_fingerprint(model) != meta["base"]:
        raise ValueError(
            f"{path.name} was trained on another base model (fingerprint "
            f"{meta['base']}, this one {base_fingerprint(model)}): load the "
            "checkpoint it was trained on"
        )
    if not lora_layers(model):
        apply_lora(
            model,
            rank,
            float(meta["alpha"]),
            targets=targets,
            tokens=json.loads(meta.get("tokens", "[]")),
            embedding_rank=int(meta.get("embedding_rank", "0")),
        )
    ranks = {layer.rank for layer in lora_layers(model).values()}
    if ranks != {rank}:
        raise ValueError(
            f"{path.name} holds rank-{rank} adapters, this model rank {ranks}"
        )
    tensors = load_file(str(path))
    params = adapter_parameters(model)
    if set(tensors) != set(params):
        raise ValueError(
            f"{path.name} adapts other layers ({', '.join(targets)}) or other token "
            "rows than this model"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    return model
