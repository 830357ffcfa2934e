"""One training run over several processes: DDP replicates the model, FSDP shards it.

DDP (distributed data parallel): every process holds the whole model, gradients and
AdamW state, trains on its own share of the batch, and the gradients are averaged
(all-reduce) during the backward pass. FSDP (fully sharded data parallel, ZeRO stage
3): every process holds only 1/N of the weights, gradients and AdamW state. Before a
block runs, its weights are gathered from all processes (all-gather) and freed after;
its gradients are summed and split back into shards (reduce-scatter). Same mathematics,
same loss; memory per process falls by about N for everything but the activations, at
the price of more communication. PyTorch's FSDP2 (`fully_shard`) works on CPUs with the
gloo backend as well as on GPUs.

Checkpoints stay in the single-process format: the shards are gathered into whole
tensors on save and split again on resume, so a run saved under FSDP resumes under DDP
or in one process, and vice versa.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PARALLEL = ("ddp", "fsdp")


def check_parallel(parallel: str, world_size: int) -> None:
    """Raise a clear error for an unknown strategy, or for FSDP without a process group
    to shard over."""
    if parallel not in PARALLEL:
        raise ValueError(
            f"unknown parallel strategy '{parallel}': use one of {', '.join(PARALLEL)}"
        )
    if parallel == "fsdp" and not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    ):
        raise ValueError(
            "parallel='fsdp' shards the model across processes, but no process group "
            "exists: launch with `torchrun --nproc_per_node N ...` and call "
            "torch.distributed.init_process_group"
        )
    if parallel == "fsdp" and world_size != torch.distributed.get_world_size():
        raise ValueError(
            f"world_size={world_size} but the process group has "
            f"{torch.distributed.get_world_size()} processes"
        )


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: each Transformer block is one shard group (gathered just before it runs),
    then the root (embedding, final norm, output layer). Call before building the
    optimizer, which must hold the shards."""
    from torch.distributed.fsdp import fully_shard

    for block in model.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "full_tensor")  # a DTensor


@contextlib.contextmanager
def gradient_sync(
    model: torch.nn.Module, parallel: str, enabled: bool
) -> Iterator[None]:
    """Skip the gradient communication for all but the last micro-batch of an
    accumulated step.

    DDP: its `no_sync()`. FSDP: keep this rank's unsharded gradients and reduce-scatter
    them once, later.
    """
    if enabled or not hasattr(
        model, "no_sync" if parallel == "ddp" else "set_requires_gradient_sync"
    ):
        yield
    elif parallel == "ddp":
        with model.no_sync():
            yield
    else:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU: gathered from every rank if sharded (a collective:
    all ranks call it)."""
    return (tensor.full_tensor() if is_sharded(tensor) else tensor).detach().cpu()


def gather_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as whole CPU tensors, each storage once (a tied output
    matrix is saved as the embedding only, as checkpoint.unique_tensors does). Every
    rank must call it."""
    seen, weights = set(), {}
    for name, tensor in model.state_dict().items():
        local = tensor.to_local() if is_sharded(tensor) else tensor
        if local.data_ptr() in seen:
            continue
        seen.add(local.data_ptr())
        weights[name] = full_tensor(tensor).contiguous()
    return weights


def gather_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with whole tensors: the format a single process saves.
    Every rank must call it."""
    state = optimizer.state_dict()
    whole = {
        index: {
            k: full_tensor(v) if isinstance(v, torch.Tensor) else v
            for k, v in values.items()
        }
        for index, values in sorted(state["state"].items())
    }
    return {"state": whole, "param_groups": state["param_groups"]}


def _shard_like(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's piece of `whole`, placed as `like` is (no communication: every rank
    has `whole`)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(
        whole.to(like.device, like.dtype),
        like.device_mesh,
        like.placements,
        src_data_rank=None,
    )


@torch.no_grad()
def load_sharded(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict,
) -> None:
    """Load whole weights and AdamW state (as saved by one process, or gathered) into a
    sharded model."""
    params = dict(model.named_parameters())
    missing = [name for name in params if name not in weights]
    if missing:
        raise ValueError(
            f"the checkpoint lacks {', '.join(missing[:4])}: "
            "not a checkpoint of this model"
        )
    for name, param in params.items():
        param.to_local().copy_(_shard_like(weights[name], param).to_local())
    order = [p for group in optimizer.param_groups for p in group["params"]]
    state = {
        index: {
            k: _shard_like(v, order[index])
            if isinstance(v, torch.Tensor) and v.dim()
            else v
            for k, v in values.items()
        }
        for index, values in optimizer_state["state"].items()
    }
    optimizer.load_state_dict(
        {"state": state, "param_groups": optimizer_state["param_groups"]}
    )


def local_parameter_bytes(model: torch.nn.Module) -> int:
    """The parameter bytes this process holds: all under DDP, its shards under FSDP."""
    return sum(
        (p.to_local() if is_sharded(p) else p).nbytes for p in model.parameters()
    )
