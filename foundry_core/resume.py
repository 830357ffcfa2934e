"""Saving and resuming a Trainer: what lets a run stop and later continue exactly.

A checkpoint holds everything the next step depends on (weights, optimizer moments,
step, data position, random generators), and on resume the history file is cut back to
the checkpoint's step, so a resumed run's records match an uninterrupted one's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import parallel as par
from .checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .history import append_history, history_file


class Resumable:
    """The checkpoint and history-file methods of Trainer, which inherits them.

    They use the Trainer's model, optimizer, scaler, config, out_dir, keep, rank,
    world_size, parallel, step and history.
    """

    def save(self) -> Path:
        """Write a checkpoint of this step.

        Under torchrun every rank must call save(): rank 0 writes, and no rank returns
        before the checkpoint is complete. Under FSDP the shards are first gathered into
        whole tensors, so the checkpoint is the same as one process's."""
        if self.out_dir is None:
            raise ValueError("the Trainer has no out_dir to save checkpoints into")
        if self.parallel == "fsdp":
            weights, optimizer = (
                par.gather_weights(self.model),
                par.gather_optimizer_state(self.optimizer),
            )
        else:
            weights, optimizer = (
                self.model,
                (self.optimizer.state_dict() if self.rank == 0 else None),
            )
        path = checkpoint_dir(self.out_dir, self.step)
        if self.rank == 0:
            state = {
                "optimizer": optimizer,
                "scaler": self.scaler.state_dict(),
                "history": self.history,
                "train_config": self.config.to_dict(),
                "model_config": self.model.config.to_dict(),
            }
            path = save_checkpoint(
                self.out_dir, self.step, weights, state, keep=self.keep
            )
        if self.world_size > 1:
            torch.distributed.barrier()
        return path

    def last_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.out_dir) if self.out_dir else None

    def resume(self, path: str | Path | None = None) -> int:
        """Continue from a checkpoint (default: out_dir's newest); return its step."""
        path = Path(path) if path else self.last_checkpoint()
        if path is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {self.out_dir}")
        # the saved groups would also bring back the saving machine's choice of
        # AdamW's kernel (fused or not, optim.fused_adamw): this machine's stays
        kernels = [
            {k: g[k] for k in ("fused", "foreach")} for g in self.optimizer.param_groups
        ]
        if self.parallel == "fsdp":
            # every rank reads the whole checkpoint and keeps its shards
            weights, state = read_checkpoint(path)
            self._check_model_config(path, state)
            par.load_sharded(self.model, self.optimizer, weights, state["optimizer"])
        else:
            state = load_checkpoint(path, self.model)
            self._check_model_config(path, state)
            self.optimizer.load_state_dict(state["optimizer"])
        for group, kernel in zip(self.optimizer.param_groups, kernels):
            group.update(kernel)
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.step = list(state["history"]), state["step"]
        set_rng_state(state["rng"])
        if self.history_path and self.history_path.exists():
            # drop the steps after the checkpoint
            self.history_path.unlink()
            self._log_history(self.history)
        return self.step

    # ------------------------------------------------------------------ history as data

    @property
    def history_path(self) -> Path | None:
        """out_dir/history.jsonl for rank 0, history-rank<r>.jsonl for the others."""
        if self.out_dir is None:
            return None
        return history_file(self.out_dir, self.rank)

    def _log_history(self, records: list[dict]) -> None:
        if self.history_path is None:
            return
        append_history(self.history_path, records)

    def _check_model_config(self, path: Path, state: dict) -> None:
        if state["model_config"] != self.model.config.to_dict():
            raise ValueError(
                f"{path} was trained with a different ModelConfig: "
                "build the model from "
                f"ModelConfig.from_dict(state['model_config'])"
            )
