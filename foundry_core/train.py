"""The training loop: accumulation, clipping, mixed precision, evaluation, checkpoints.

One `Trainer.fit()` call runs the whole loop; every piece is a short method so the
chapter can show it on its own. The optimizer and its schedule (AdamW, warmup + cosine
decay) are in optim.py, saving and resuming in resume.py, the run's history file in
history.py. The run is reproducible: batches come in a fixed order from the seed, and a
checkpoint holds everything the next step depends on (weights, optimizer moments, step,
data position, random generators), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import parallel as par
from .config import TrainConfig, check_compatible
from .data.dataset import Resampled, TokenWindows, make_loader
from .hardware import HardwareInfo, Precision, choose_precision, detect, prepare_device
from .history import progress_bar
from .history import read_history as read_history  # re-exported for chapter 12
from .optim import lr_at, make_optimizer
from .resume import Resumable


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: continuing would only destroy the weights."""


# A loss function takes the (possibly wrapped) model and one batch, already on the
# device, and returns the loss to minimise and any metrics worth logging. Post-training
# (SFT, reward model, DPO) reuses the whole loop below by passing its own.
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


class Trainer(Resumable):
    """Trains a model; keeps a history of metrics the chapters plot.

    The data is a token stream (a numpy array, cut into random windows: pretraining) or
    any Dataset of tensor tuples, drawn in a seeded random order, epoch after epoch, and
    batched by its `collate` method when it has one (SFT, reward model, DPO). `loss_fn`
    turns a batch into a loss, `schedule` a step into its learning rate.

    Under torchrun (world_size > 1), `parallel` says how the processes share the work:
    "ddp" replicates the model and averages gradients, "fsdp" shards weights, gradients
    and AdamW state (see parallel.py). Saving and resuming come from Resumable
    (resume.py).
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
        schedule: Callable[[int, TrainConfig], float] = lr_at,
    ):
        check_compatible(model.config, config)
        par.check_parallel(parallel, world_size)
        self.hardware = hardware or detect()
        self.device = torch.device(self.hardware.device)
        prepare_device(self.hardware)
        self.precision: Precision = choose_precision(self.hardware, config.dtype)
        if parallel == "fsdp" and self.precision.grad_scaler:
            raise ValueError(
                "FSDP here trains in bf16 or fp32; "
                "fp16 with loss scaling (a GPU without bf16) "
                "needs parallel='ddp' or dtype='float32'"
            )
        self.model = model.to(self.device)
        self.model.gradient_checkpointing = config.grad_checkpointing
        self.config, self.rank = config, rank
        self.world_size, self.parallel = world_size, parallel
        self.out_dir = Path(out_dir) if out_dir else None
        self.checkpoint_interval, self.keep = checkpoint_interval, keep_checkpoints
        self.peak_tflops, self.callbacks = peak_tflops, callbacks
        self.progress = progress
        self.loss_fn = loss_fn
        # the learning rate of each step; chapter 04's exercise swaps in the reader's
        self.schedule = schedule
        self.train_data, self.val_data = self._datasets(train_tokens, val_tokens)
        if parallel == "fsdp":
            # before the optimizer, which must hold the shards, not whole tensors
            par.shard_model(self.model)
        self.optimizer = make_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.precision.grad_scaler
        )
        self.forward = self._forward_module()
        self.step = 0
        self.history: list[dict] = []

    def _datasets(self, train_tokens, val_tokens) -> tuple[Dataset, Dataset | None]:
        """Training examples for every step on every rank, and the validation ones."""
        config = self.config
        examples = (
            config.max_steps
            * config.grad_accum_steps
            * config.batch_size
            * self.world_size
        )
        if isinstance(train_tokens, Dataset):
            train_data = Resampled(train_tokens, examples, seed=config.seed)
        else:
            train_data = TokenWindows(
                train_tokens, config.seq_len, num_samples=examples, seed=config.seed
            )
        if val_tokens is None or isinstance(val_tokens, Dataset):
            return train_data, val_tokens
        return train_data, TokenWindows(val_tokens, config.seq_len, strided=True)

    def _forward_module(self) -> torch.nn.Module:
        """What a step calls: the model, compiled if asked, wrapped in DDP if used."""
        forward = torch.compile(self.model) if self.config.compile else self.model
        if self.world_size > 1 and self.parallel == "ddp":
            # DDP averages the gradients of all ranks during backward.
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(forward)
        return forward

    # --------------------------------------------------------- one step, piece by piece

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.precision.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.torch_dtype)

    def set_learning_rate(self) -> float:
        """The schedule's rate for this step, given to every parameter group."""
        lr = self.schedule(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, batches) -> dict:
        """Accumulate gradients over grad_accum_steps micro-batches, clip, and step."""
        config = self.config
        lr = self.set_learning_rate()
        losses, metrics, tokens = [], {}, 0
        for micro in range(config.grad_accum_steps):
            batch = tuple(t.to(self.device, non_blocking=True) for t in next(batches))
            tokens += batch[0].numel()  # padded batches (SFT, DPO) vary in length
            # Under DDP or FSDP, only the last micro-batch's backward needs to exchange
            # the gradients.
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
                        f"the loss became {loss.item()} at step {self.step} "
                        f"(lr {lr:.2e}): lower the learning rate, "
                        "keep grad_clip > 0 and warmup_steps > 0, "
                        "or use dtype='float32'; "
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
            # this process's own micro-batches, before averaging over ranks
            record["rank_loss"] = loss
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
        """The loss and the loss function's metrics over up to eval_steps val batches.

        Under torchrun the ranks share the batches (rank r takes every world_size-th
        example) and average their results, so the validation loss is the one a single
        process would report. Every rank runs the same number of batches, as FSDP's
        forward pass needs all ranks to take part."""
        if self.val_data is None:
            raise ValueError("no validation data was given to the Trainer")
        batch_size = self.config.batch_size
        limit = min(
            max_batches or self.config.eval_steps,
            len(self.val_data) // (batch_size * self.world_size),
        )
        if limit == 0:
            raise ValueError(
                f"the validation set holds fewer than batch_size={batch_size} examples "
                "per process"
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

    # ------------------------------------------------------------------------- the loop

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until max_steps (or `steps` more), evaluating and saving as planned."""
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
        bar = progress_bar(stop - self.step, self.progress)
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
                # every rank calls it: under FSDP all take part in gathering the shards
                self.save()
            for callback in self.callbacks:
                callback(self, record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
        if bar is not None:
            bar.close()
        return self.history
