"""The training loop: AdamW, warmup + cosine decay, clipping, accumulation, mixed precision, checkpoints.

One `Trainer.fit()` call runs the whole loop; every piece is a short method so the chapter can show it on
its own. The run is reproducible: batches come in a fixed order from the seed, and a checkpoint holds
everything the next step depends on (weights, optimizer moments, step, data position, random
generators), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import parallel as par
from .checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, check_compatible
from .data.dataset import Resampled, TokenWindows, make_loader
from .hardware import HardwareInfo, Precision, choose_precision, detect, prepare_device


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: continuing would only destroy the weights."""


# A loss function takes the (possibly wrapped) model and one batch, already on the device, and returns the
# loss to minimise and any metrics worth logging. Post-training (SFT, reward model, DPO) reuses the whole
# loop below by passing its own.
LossFn = Callable[
    [torch.nn.Module, tuple[torch.Tensor, ...]],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]


def language_model_loss(
    model: torch.nn.Module, batch: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy on (inputs, targets); targets of -100 are ignored."""
    inputs, targets = batch
    return model(inputs, targets)[1], {}


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup from 0 to lr, then a cosine decay to min_lr at max_steps.

    Warmup keeps the first updates small while AdamW's moment estimates are still noise; the cosine
    lowers the step size smoothly as the model approaches a minimum.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(
        1.0,
        (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps),
    )
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (
        1 + math.cos(math.pi * progress)
    )


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices of the blocks only.

    Decay pulls weights towards zero. That regularises the large matrices, but on norm gains it fights
    the normalisation, and on the embedding it shrinks rare tokens' vectors just for being rare.
    """
    decay, no_decay = [], []
    embedding = {
        id(p) for name, p in model.named_parameters() if "embed_tokens" in name
    }
    for param in model.parameters():
        if param.requires_grad:
            (
                decay if param.dim() >= 2 and id(param) not in embedding else no_decay
            ).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


class Trainer:
    """Trains a model; keeps a history of metrics the chapters plot.

    The data is a token stream (a numpy array, cut into random windows: pretraining) or any Dataset of
    tensor tuples, drawn in a seeded random order, epoch after epoch, and batched by its `collate`
    method when it has one (SFT, reward model, DPO). `loss_fn` turns a batch into a loss.

    Under torchrun (world_size > 1), `parallel` says how the processes share the work: "ddp" replicates
    the model and averages gradients, "fsdp" shards weights, gradients and AdamW state (see parallel.py).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        train_tokens: np.ndarray | Dataset,
        val_tokens: np.ndarray | Dataset | None = None,
        out_dir: str | Path | None = None,
        hardware: HardwareInfo | None = None,
        rank: int = 0,
        world_size: int = 1,
        checkpoint_interval: int | None = None,
        keep_checkpoints: int = 3,
        peak_tflops: float | None = None,
        callbacks: tuple[Callable[["Trainer", dict], None], ...] = (),
        progress: bool = False,
        loss_fn: LossFn = language_model_loss,
        parallel: str = "ddp",
    ):
        check_compatible(model.config, config)
        par.check_parallel(parallel, world_size)
        self.hardware = hardware or detect()
        self.device = torch.device(self.hardware.device)
        prepare_device(self.hardware)
        self.precision: Precision = choose_precision(self.hardware, config.dtype)
        if parallel == "fsdp" and self.precision.grad_scaler:
            raise ValueError(
                "FSDP here trains in bf16 or fp32; fp16 with loss scaling (a GPU without bf16) "
                "needs parallel='ddp' or dtype='float32'"
            )
        self.model = model.to(self.device)
        self.model.gradient_checkpointing = config.grad_checkpointing
        self.config, self.rank, self.world_size, self.parallel = (
            config,
            rank,
            world_size,
            parallel,
        )
        self.out_dir = Path(out_dir) if out_dir else None
        self.checkpoint_interval, self.keep = checkpoint_interval, keep_checkpoints
        self.peak_tflops, self.callbacks, self.progress = (
            peak_tflops,
            callbacks,
            progress,
        )
        self.loss_fn = loss_fn
        examples = (
            config.max_steps * config.grad_accum_steps * config.batch_size * world_size
        )
        if isinstance(train_tokens, Dataset):
            self.train_data = Resampled(train_tokens, examples, seed=config.seed)
        else:
            self.train_data = TokenWindows(
                train_tokens, config.seq_len, num_samples=examples, seed=config.seed
            )
        if val_tokens is None or isinstance(val_tokens, Dataset):
            self.val_data = val_tokens
        else:
            self.val_data = TokenWindows(val_tokens, config.seq_len, strided=True)
        if (
            parallel == "fsdp"
        ):  # before the optimizer, which must hold the shards, not whole tensors
            par.shard_model(self.model)
        self.optimizer = make_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.precision.grad_scaler
        )
        self.forward = torch.compile(self.model) if config.compile else self.model
        if (
            world_size > 1 and parallel == "ddp"
        ):  # DDP averages the gradients of all ranks during backward
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(self.forward)
        self.step = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ one step, piece by piece

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.precision.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.torch_dtype)

    def train_step(self, batches) -> dict:
        """Accumulate gradients over grad_accum_steps micro-batches, clip, and take one AdamW step."""
        config = self.config
        lr = lr_at(self.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses, metrics, tokens = [], {}, 0
        for micro in range(config.grad_accum_steps):
            batch = tuple(t.to(self.device, non_blocking=True) for t in next(batches))
            tokens += batch[0].numel()  # padded batches (SFT, DPO) vary in length
            # Under DDP or FSDP, only the last micro-batch's backward needs to exchange the gradients.
            last = micro == config.grad_accum_steps - 1
            with par.gradient_sync(
                self.model if self.parallel == "fsdp" else self.forward,
                self.parallel,
                last,
            ):
                with self.autocast():
                    loss, extra = self.loss_fn(self.forward, batch)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"the loss became {loss.item()} at step {self.step} (lr {lr:.2e}): lower the learning "
                        f"rate, keep grad_clip > 0 and warmup_steps > 0, or use dtype='float32'; "
                        f"the last good checkpoint is {self.last_checkpoint()}"
                    )
                self.scaler.scale(loss / config.grad_accum_steps).backward()
            losses.append(loss.item())
            for name, value in extra.items():
                metrics[name] = (
                    metrics.get(name, 0.0) + float(value) / config.grad_accum_steps
                )
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), config.grad_clip or float("inf")
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = sum(losses) / len(losses)
        record = {
            "step": self.step,
            "loss": self._mean_over_ranks(loss),
            "lr": lr,
            "grad_norm": par.full_tensor(grad_norm).item(),
            "tokens": tokens * self.world_size,
            **{k: self._mean_over_ranks(v) for k, v in metrics.items()},
        }
        if self.world_size > 1:
            record["rank_loss"] = (
                loss  # this process's own micro-batches, before averaging over ranks
            )
        return record

    def _mean_over_ranks(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.item() / self.world_size

    def evaluate(self, max_batches: int | None = None) -> float:
        """Mean loss over consecutive validation windows (each token scored once)."""
        return self.evaluate_metrics(max_batches)["loss"]

    @torch.no_grad()
    def evaluate_metrics(self, max_batches: int | None = None) -> dict[str, float]:
        """The loss and the loss function's metrics, averaged over up to eval_steps validation batches.

        Under torchrun the ranks share the batches (rank r takes every world_size-th example) and average
        their results, so the validation loss is the one a single process would report; every rank runs
        the same number of batches, as FSDP's forward pass needs all ranks to take part."""
        if self.val_data is None:
            raise ValueError("no validation data was given to the Trainer")
        batch_size = self.config.batch_size
        limit = min(
            max_batches or self.config.eval_steps,
            len(self.val_data) // (batch_size * self.world_size),
        )
        if limit == 0:
            raise ValueError(
                f"the validation set holds fewer than batch_size={batch_size} examples per process"
            )
        self.model.eval()
        totals: dict[str, float] = {}
        for count, batch in enumerate(
            make_loader(self.val_data, batch_size, self.rank, self.world_size)
        ):
            if count == limit:
                break
            with self.autocast():
                loss, extra = self.loss_fn(
                    self.forward, tuple(t.to(self.device) for t in batch)
                )
            for name, value in {"loss": loss, **extra}.items():
                totals[name] = totals.get(name, 0.0) + float(value)
        self.model.train()
        return {
            name: self._mean_over_ranks(total / limit) for name, total in totals.items()
        }

    # ------------------------------------------------------------------ the loop

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until max_steps (or `steps` more steps), evaluating and checkpointing on schedule."""
        config = self.config
        stop = (
            config.max_steps
            if steps is None
            else min(config.max_steps, self.step + steps)
        )
        start_example = self.step * config.grad_accum_steps * config.batch_size
        batches = iter(
            make_loader(
                self.train_data,
                config.batch_size,
                self.rank,
                self.world_size,
                start_example,
            )
        )
        flops_per_token = self.model.config.flops_per_token(config.seq_len)
        bar = _progress_bar(stop - self.step, self.progress)
        self.model.train()
        while self.step < stop:
            started = time.perf_counter()
            record = self.train_step(batches)
            elapsed = time.perf_counter() - started
            record["tokens_per_s"] = record["tokens"] / elapsed
            if self.peak_tflops:
                record["mfu"] = (
                    flops_per_token
                    * record["tokens"]
                    / elapsed
                    / (self.peak_tflops * 1e12)
                )
            if self.val_data is not None and (
                self.step % config.eval_interval == 0 or self.step == stop
            ):
                record.update(
                    {f"val_{k}": v for k, v in self.evaluate_metrics().items()}
                )
            self.history.append(record)
            self._log_history([record])
            if (
                self.out_dir
                and self.checkpoint_interval
                and self.step % self.checkpoint_interval == 0
            ):
                self.save()  # every rank calls it: under FSDP all take part in gathering the shards
            for callback in self.callbacks:
                callback(self, record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
        if bar is not None:
            bar.close()
        return self.history

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        """Write a checkpoint of this step. Under torchrun every rank must call save(): rank 0 writes, and
        no rank returns before the checkpoint is complete. Under FSDP the shards are first gathered into
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
        """Continue from a checkpoint (default: the newest in out_dir); returns its step."""
        path = Path(path) if path else self.last_checkpoint()
        if path is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {self.out_dir}")
        if (
            self.parallel == "fsdp"
        ):  # every rank reads the whole checkpoint and keeps its shards
            weights, state = read_checkpoint(path)
            self._check_model_config(path, state)
            par.load_sharded(self.model, self.optimizer, weights, state["optimizer"])
        else:
            state = load_checkpoint(path, self.model)
            self._check_model_config(path, state)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.step = list(state["history"]), state["step"]
        set_rng_state(state["rng"])
        if (
            self.history_path and self.history_path.exists()
        ):  # drop the steps after the checkpoint
            self.history_path.unlink()
            self._log_history(self.history)
        return self.step

    # ------------------------------------------------------------------ history as data

    @property
    def history_path(self) -> Path | None:
        """out_dir/history.jsonl (rank 0) or history-rank<r>.jsonl: one JSON record per step, written as
        the run goes, so a plot or a script reads a run's curves from data, never from printed text."""
        if self.out_dir is None:
            return None
        return self.out_dir / (
            "history.jsonl" if self.rank == 0 else f"history-rank{self.rank}.jsonl"
        )

    def _log_history(self, records: list[dict]) -> None:
        if self.history_path is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.history_path, "a") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)

    def _check_model_config(self, path: Path, state: dict) -> None:
        if state["model_config"] != self.model.config.to_dict():
            raise ValueError(
                f"{path} was trained with a different ModelConfig: build the model from "
                f"ModelConfig.from_dict(state['model_config'])"
            )


def read_history(run_dir: str | Path, rank: int = 0) -> list[dict]:
    """The per-step records a Trainer wrote into `run_dir` (rank 0's unless `rank` says otherwise)."""
    path = Path(run_dir) / (
        "history.jsonl" if rank == 0 else f"history-rank{rank}.jsonl"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: no Trainer with out_dir={run_dir} (and this rank) ran"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="step")
