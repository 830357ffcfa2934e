"""The language-modelling loss, fused with the output projection and computed in chunks
of rows.

For a small model the output layer is the largest tensor of a training step: batch x
seq x vocab logits (16 x 256 x 8192 floats = 134 MB). The plain recipe,
logits = h @ W.T then F.cross_entropy, writes that tensor, reads it back for the
log-softmax, stores another of the same size for the backward pass, fills a third with
zeros to scatter the targets into, and so on: every pass a trip through main memory.
Here each chunk of rows is projected, turned into its loss and, when training, into its
gradients while it is still in the CPU's cache (or the GPU's SRAM), then discarded. The
result is the same loss and the same gradients with a fraction of the memory, and
faster. The same idea is used by production trainers (e.g. the "fused linear
cross-entropy" of Liger Kernel).
"""

from __future__ import annotations

import torch

from .sequences import IGNORE

# Logits per chunk. On a CPU: 4M floats = 16 MB, sized to stay in a large cache. A GPU
# has no such cache to aim for, and every chunk costs a dozen kernel launches, which a
# GPU waits on: there a chunk holds 32M floats (128 MB), so the chunks stay few while
# the full logits of a large batch (the a100 preset's: 32,768 x 16,384 floats, 2 GiB)
# are still never made.
CHUNK_ELEMENTS = 1 << 22
GPU_CHUNK_ELEMENTS = 1 << 25


def chunk_elements(device: torch.device | str) -> int:
    """Logits per chunk on `device` (see above)."""
    if torch.device(device).type == "cpu":
        return CHUNK_ELEMENTS
    return GPU_CHUNK_ELEMENTS


def _loss_and_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    with_grads: bool,
    chunk_rows: int | None = None,
):
    """Mean negative log-likelihood of `targets` under softmax(hidden @ weight.T), chunk
    by chunk.

    With `with_grads`, also the gradients of the *summed* loss with respect to hidden
    and weight: for one row, softmax(logits) - one_hot(target). The division by the
    number of counted rows waits for the backward pass: done here, in fp16, the many
    tiny gradients would round to zero before fp16 training's loss scale (GradScaler)
    could lift them, and loss scaling would not help. Returns (mean loss, grad_hidden,
    grad_weight, count).
    """
    valid = targets != ignore_index
    count = valid.sum()
    safe_targets = torch.where(valid, targets, 0)
    total = torch.zeros(
        (), device=hidden.device, dtype=torch.promote_types(hidden.dtype, torch.float32)
    )
    grad_hidden = torch.empty_like(hidden) if with_grads else None
    grad_weight = torch.zeros_like(weight) if with_grads else None
    step = chunk_rows or max(16, chunk_elements(hidden.device) // weight.shape[0])
    for start in range(0, hidden.shape[0], step):
        h, target, keep = (
            hidden[start : start + step],
            safe_targets[start : start + step],
            valid[start : start + step],
        )
        logits = h @ weight.T
        # softmax statistics need fp32's precision
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        nll = -log_probs.gather(1, target[:, None]).squeeze(1)
        total += (nll * keep).sum()
        if with_grads:
            grad = log_probs.exp_()  # softmax, reusing the chunk's memory
            grad[torch.arange(len(target), device=grad.device), target] -= 1.0
            grad *= keep[:, None]  # ignored rows get no gradient
            grad = grad.to(h.dtype)
            grad_hidden[start : start + step] = grad @ weight
            grad_weight.add_(grad.T @ h)
    return total / count, grad_hidden, grad_weight, count


class _LinearCrossEntropy(torch.autograd.Function):
    """The gradients are made in the forward pass (they need the chunk's softmax, which
    is gone after); the backward pass only scales them by the incoming gradient (1.0
    for a plain loss.backward(), the loss scale under fp16) divided by the number of
    counted rows, in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows):
        loss, grad_hidden, grad_weight, count = _loss_and_grads(
            hidden, weight, targets, ignore_index, True, chunk_rows
        )
        ctx.save_for_backward(grad_hidden, grad_weight, count)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        factor = grad_output / count
        return (
            _scaled(grad_hidden, factor),
            _scaled(grad_weight, factor),
            None,
            None,
            None,
        )


def _scaled(grad: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """grad * factor computed in at least fp32, returned in grad's own dtype."""
    wide = torch.promote_types(grad.dtype, torch.float32)
    return (grad.to(wide) * factor.to(wide)).to(grad.dtype)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = IGNORE,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """F.cross_entropy(hidden @ weight.T, targets, ignore_index=ignore_index), without
    the full logits.

    hidden: (N, d), weight: (vocab, d), targets: (N,). Rows whose target is
    `ignore_index` count for nothing (in SFT: the prompt). Like F.cross_entropy, the
    mean over no counted rows is NaN.
    """
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(
            hidden, weight, targets, ignore_index, chunk_rows
        )
    return _loss_and_grads(hidden, weight, targets, ignore_index, False, chunk_rows)[0]
