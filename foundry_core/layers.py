"""The parts of a LLaMA block that do not depend on the rest: RMSNorm, rotary position
embedding (RoPE) and the SwiGLU MLP.

They live apart from model.py so that model.py can read as the architecture itself:
attention, the block and the model that stacks them. model.py imports them back, so
`from foundry_core.model import RMSNorm` keeps working.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned gain.

    Unlike LayerNorm it neither subtracts the mean nor adds a bias: cheaper, and as good
    in practice. The formula is in rms_norm, below; its backward pass is written out by
    hand in RMSNormFunction.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RMSNormFunction.apply(x, self.weight, self.eps)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight * x / sqrt(mean(x^2) + eps) over the last axis, and 1 / that root.

    The statistics are computed in fp32 even under autocast (or for bf16 weights),
    where bf16 would lose precision.
    """
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    inv_rms = torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (wide * inv_rms).to(x.dtype), inv_rms


class RMSNormFunction(torch.autograd.Function):
    """rms_norm with a backward pass written out by hand.

    Autograd would differentiate the formula one operation at a time, each a pass over
    the whole tensor, and on a CPU those passes are bound by memory. Written out, with
    n = x / rms and g = grad_y * weight, the gradients are

        grad_x = (g - n * mean(g * n)) / rms   (each x also moves the rms)
        grad_weight = sum over all vectors of grad_y * n

    in about half the passes: one norm over 16 x 256 x 384 floats, forward and
    backward, took 3.7 ms against autograd's 4.9 on a 2-core Xeon
    (benchmarks/README.md). The normalised tensor is recomputed here rather than
    saved, which also saves memory.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float):
        y, inv_rms = rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, inv_rms)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, inv_rms = ctx.saved_tensors
        normed = x.to(inv_rms.dtype) * inv_rms
        grad_weight = None
        if ctx.needs_input_grad[1]:  # the product rounded as in the forward pass
            grad_weight = grad_y * normed.to(x.dtype)
            grad_weight = grad_weight.reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        g = grad_y.to(inv_rms.dtype) * weight
        mean_gn = (g * normed).mean(-1, keepdim=True)
        grad_x = g.sub_(normed.mul_(mean_gn)).mul_(inv_rms)  # in place: no new tensors
        return grad_x.to(x.dtype), grad_weight, None


def rope_tables(
    head_dim: int, max_seq_len: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angle for every (position, frequency).

    Both have shape (max_seq_len, head_dim). Dimension pair i turns at frequency
    base^(-2i/head_dim): fast for the first pairs, slow for the last. Each frequency
    appears twice because the two halves of a head vector form the rotated pairs.
    """
    inv_freq = 1.0 / (
        base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    )
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + d/2]) of x by its position's angle.

    x has shape (..., seq, head_dim). A query at position m and a key at position n
    then meet at an angle that depends only on m - n: attention sees relative positions
    although each vector was rotated by its absolute one.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)).

    The gate decides, per hidden unit, how much of `up` passes.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
