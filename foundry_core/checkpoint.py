"""Checkpoints that survive crashes and resume a run exactly.

A checkpoint is a folder `step-000123/`: the weights as safetensors (no pickled code),
and `state.pt` with the optimizer state, the step, the data position, the random
generators and the metrics so far, read back with `torch.load(weights_only=True)`, which
refuses anything but tensors and plain values. The folder is written under a temporary
name and renamed when complete, so a crash mid-write leaves the previous checkpoint
untouched and nothing half-written that looks like a checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .fileio import atomic_directory

WEIGHTS, STATE = "model.safetensors", "state.pt"
_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    """Every random generator a training step may draw from, as tensors and
    plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unique_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each storage once, on the CPU: what safetensors can write (no
    shared tensors)."""
    # safetensors stores each tensor once: a tied output matrix is saved as the
    # embedding only
    seen, weights = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        weights[name] = tensor.detach().contiguous().cpu()
    return weights


def checkpoint_dir(folder: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of `step` lives in a run folder."""
    return Path(folder) / f"step-{step:06d}"


def save_checkpoint(
    folder: str | os.PathLike,
    step: int,
    model: torch.nn.Module | dict[str, torch.Tensor],
    state: dict,
    keep: int = 3,
) -> Path:
    """Write `folder/step-<step>/` atomically, then delete all but the newest `keep`
    checkpoints.

    `model` is the model, or its weights already gathered into CPU tensors (each storage
    once), as a sharded (FSDP) run provides them."""
    folder = Path(folder)
    target = checkpoint_dir(folder, step)
    with atomic_directory(target) as tmp:
        save_file(
            unique_tensors(model) if isinstance(model, torch.nn.Module) else model,
            tmp / WEIGHTS,
        )
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return target


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first (never the temporary folders)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := _NAME.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, saved state) of a checkpoint folder, on the CPU, without loading them
    into a model."""
    path = Path(path)
    for name in (WEIGHTS, STATE):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} not found: "
                "not a checkpoint folder (see list_checkpoints)"
            )
    return load_file(path / WEIGHTS, device="cpu"), torch.load(
        path / STATE, map_location="cpu", weights_only=True
    )


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> dict:
    """Load the weights into `model` and return the saved state (optimizer, step, data
    position, ...)."""
    path = Path(path)
    weights, state = read_checkpoint(path)
    if hasattr(model, "load_weights"):
        model.load_weights(weights, source=str(path / WEIGHTS))
    else:
        model.load_state_dict(weights)
    return state
