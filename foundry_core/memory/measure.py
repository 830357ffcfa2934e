"""Where a training step's memory goes, measured, to hold the analytic estimate to
account.

`memory.estimate.estimate_memory` counts bytes from shapes. This module runs real
Trainer steps and measures:

- on CUDA, with the allocator's own counter (`torch.cuda.max_memory_allocated`),
  restarted after each gradient so that we also know how many gradients existed at the
  peak;
- on the CPU, which has no such counter, with `torch.profiler(profile_memory=True)`: it
  records every allocation and free made through PyTorch's CPU allocator, and replaying
  them in time order gives the bytes alive at each moment, hence the peak. The
  process's resident size (RSS) would also count the Python heap, the BLAS library's
  buffers and pages the C allocator keeps after a free: too noisy;
- on Apple MPS, which has no peak counter either, by sampling the allocated bytes at the
  end of the forward pass and after each gradient: a lower bound.

Weights, buffers and AdamW's moments are alive before the step and are counted tensor by
tensor; what the step adds on top of them is measured. The step is measured after a
warm-up step, so that AdamW's moments exist, as they do for every step of a run but the
first.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..config import ModelConfig, TrainConfig
from ..hardware import HardwareInfo, detect
from ..model import Transformer
from ..train import Trainer
from .estimate import MemoryEstimate

MIB = 1024**2
# a profiler marker: a parameter's gradient has just been made
_GRADIENT_MARK = "foundry:gradient"


@dataclass(frozen=True)
class MeasuredMemory:
    """One training step's memory on a real device, in bytes, and its time.

    At the peak, memory holds the weights and AdamW's moments (alive all along), the
    gradients made so far (`gradients_at_peak`) and `activations`: everything else the
    step holds at that moment, mostly what the forward pass saved for the backward
    pass, plus the loss's workspace and the temporaries of the operation running then.
    """

    device: str
    method: str  # how the step's bytes were seen
    weights: int  # parameters and buffers (counted)
    optimizer: int  # AdamW's two moments and step counters (counted)
    # all .grad tensors the backward pass made (counted as they were made)
    gradients: int
    gradients_at_peak: int  # those already made at the moment of the peak (measured)
    activations: int  # the rest of the peak (measured)
    peak: int  # the most bytes alive at once during the step (measured)
    # median wall time of the timed steps (run without the profiler)
    step_seconds: float
    # median CPU time of this process in those steps: on a shared machine, with one
    # thread, the work a step does, without the time spent waiting for a core (every
    # thread counts)
    step_cpu_seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def compare(self, estimate: MemoryEstimate) -> list[dict[str, object]]:
        """The estimate next to the measurement, part by part, in MiB: rows for a table
        or a chart.

        The estimate's runtime term (CUDA context, MPS pools) is left out: neither the
        allocator's counter nor the profiler sees it, so the honest comparison is
        tensors with tensors. The measured activations include the 16-bit weight copies
        autocast keeps for the backward pass, so they are set against the estimate's
        activations plus its autocast copies. The estimate counts every gradient at the
        peak; the measurement shows how many really were there.
        """
        pairs = {
            "weights": (estimate.weights, self.weights),
            "gradients": (estimate.gradients, self.gradients_at_peak),
            "optimizer": (estimate.optimizer, self.optimizer),
            "activations": (
                estimate.activations + estimate.autocast_copies,
                self.activations,
            ),
            "total (peak)": (estimate.total - estimate.runtime, self.peak),
        }
        return [
            {
                "part": part,
                "estimate (MiB)": round(est / MIB, 2),
                "measured (MiB)": round(got / MIB, 2),
                "measured / estimate": round(got / est, 3) if est else float("nan"),
            }
            for part, (est, got) in pairs.items()
        ]


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages among `tensors` (a tied weight counts once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def _synthetic_batches(
    model: ModelConfig, train: TrainConfig, device: torch.device
) -> Iterator[tuple]:
    """The same random (inputs, targets) batch forever: memory and time depend on
    shapes, not tokens."""
    generator = torch.Generator().manual_seed(train.seed)
    window = torch.randint(
        0, model.vocab_size, (train.batch_size, train.seq_len + 1), generator=generator
    )
    inputs, targets = window[:, :-1].to(device), window[:, 1:].to(device)
    while True:
        yield inputs, targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def _on_each_gradient(model: torch.nn.Module, callback: Callable[[int], None]) -> list:
    """Call `callback(bytes of the new gradient)` whenever the backward pass finishes a
    parameter's gradient."""
    return [
        p.register_post_accumulate_grad_hook(
            lambda p: callback(p.grad.untyped_storage().nbytes())
        )
        for p in model.parameters()
        if p.requires_grad
    ]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment: quiets C++ libraries that
    print to it directly."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _peak_on_cpu(trainer: Trainer, batches: Iterator[tuple]) -> tuple[int, int, int]:
    """(peak above the start, gradient bytes at the peak, all gradient bytes): the
    profiler's allocation events replayed in time order, with a marker event for each
    gradient made."""
    from torch.profiler import ProfilerActivity, profile, record_function

    sizes: list[int] = []

    def mark(nbytes: int) -> None:
        sizes.append(nbytes)
        with record_function(_GRADIENT_MARK):
            pass

    hooks = _on_each_gradient(trainer.model, mark)
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    # the profiler's library prints a line as it starts and stops
    with _native_stderr_silenced():
        prof.__enter__()
    try:
        trainer.train_step(batches)
    finally:
        with _native_stderr_silenced():
            prof.__exit__(None, None, None)
        for hook in hooks:
            hook.remove()
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        raise RuntimeError(
            f"torch {torch.__version__}'s profiler gives no memory events to replay: "
            f"measure on CUDA, or use another PyTorch version"
        )
    timeline = []  # (time, bytes allocated (+) or freed (-), is a gradient marker)
    for event in results.events():
        if (
            event.name() == "[memory]"
            and event.device_type() == torch.autograd.DeviceType.CPU
        ):
            timeline.append((event.start_ns(), event.nbytes(), False))
        elif event.name() == _GRADIENT_MARK:
            timeline.append((event.start_ns(), 0, True))
    live = peak = made = grads = grads_at_peak = 0
    # a stable sort: events at equal times keep their order
    for _, nbytes, is_gradient in sorted(timeline, key=lambda item: item[0]):
        if is_gradient:
            grads += sizes[made]
            made += 1
        live += nbytes
        if live > peak:
            peak, grads_at_peak = live, grads
    return peak, grads_at_peak, sum(sizes)


def _peak_on_accelerator(
    trainer: Trainer, batches: Iterator[tuple]
) -> tuple[int, int, int]:
    """(peak above the start, gradient bytes at the peak, all gradient bytes) from the
    device's counters.

    CUDA: the allocator's peak counter, read and restarted as each gradient is made, so
    each stretch between two gradients has its own peak. MPS: the allocated bytes
    sampled at the same moments.
    """
    cuda = trainer.device.type == "cuda"
    allocated = (
        torch.cuda.memory_allocated if cuda else torch.mps.current_allocated_memory
    )
    # (peak bytes of the stretch, gradient bytes made before it)
    stretches: list[tuple[int, int]] = []
    grads = 0

    def close_stretch(nbytes: int) -> None:
        nonlocal grads
        stretches.append(
            (torch.cuda.max_memory_allocated() if cuda else allocated(), grads)
        )
        grads += nbytes
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    _sync(trainer.device)
    start = allocated()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    hooks = _on_each_gradient(trainer.model, close_stretch)
    trainer.train_step(batches)
    _sync(trainer.device)
    for hook in hooks:
        hook.remove()
    total = grads
    close_stretch(0)  # the last stretch: clipping and the optimizer step
    peak, grads_at_peak = max(stretches)
    return peak - start, grads_at_peak, total


def _timed_steps(
    trainer: Trainer, batches: Iterator[tuple], steps: int
) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `steps` training steps."""
    wall, cpu = [], []
    for _ in range(steps):
        _sync(trainer.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.train_step(batches)
        _sync(trainer.device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


METHODS = {
    "cpu": "torch.profiler memory events, replayed in time order",
    "cuda": "torch.cuda.max_memory_allocated",
    "mps": (
        "torch.mps.current_allocated_memory, sampled "
        "(a lower bound: MPS has no peak counter)"
    ),
}


def measure_training_memory(
    model_config: ModelConfig,
    train_config: TrainConfig,
    hardware: HardwareInfo | str = "cpu",
    steps: int = 2,
    model: torch.nn.Module | None = None,
) -> MeasuredMemory:
    """Peak memory and time of one real Trainer step: a warm-up step, one measured
    step, `steps` timed ones.

    `model` is measured instead of a fresh Transformer(model_config) when given: one
    with LoRA adapters or an int4 base, say, whose frozen weights have no gradients
    and no optimizer moments. The steps train it on random tokens: pass a copy.

    `hardware` is a device kind ("cpu", "cuda", "mps") or a HardwareInfo; the precision
    follows from it and train_config.dtype, as in training. Memory depends on shapes
    only, so the batch is random tokens. See the module docstring for how each device
    is measured.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            "steps must be a positive integer (timed steps after the measured one), "
            f"got {steps!r}"
        )
    info = detect(hardware) if isinstance(hardware, str) else hardware
    torch.manual_seed(train_config.seed)
    config = replace(
        train_config,
        max_steps=steps + 2,
        warmup_steps=min(train_config.warmup_steps, 1),
    )
    # the Trainer needs data; never read here
    tokens = np.zeros(train_config.seq_len + 1, dtype=np.uint32)
    model = Transformer(model_config) if model is None else model
    trainer = Trainer(model, config, tokens, hardware=info)
    batches = _synthetic_batches(model_config, train_config, trainer.device)
    trainer.train_step(batches)  # warm-up: AdamW's moments now exist
    measure = _peak_on_cpu if info.device == "cpu" else _peak_on_accelerator
    rise, grads_at_peak, grads = measure(trainer, batches)
    weights = _tensor_bytes(
        itertools.chain(trainer.model.parameters(), trainer.model.buffers())
    )
    optimizer = _tensor_bytes(_optimizer_tensors(trainer.optimizer))
    seconds, cpu_seconds = _timed_steps(trainer, batches, steps)
    return MeasuredMemory(
        info.device,
        METHODS[info.device],
        weights,
        optimizer,
        grads,
        grads_at_peak,
        rise - grads_at_peak,
        weights + optimizer + rise,
        seconds,
        cpu_seconds,
    )


def measure_checkpointing(
    model_config: ModelConfig,
    train_config: TrainConfig,
    hardware: HardwareInfo | str = "cpu",
    steps: int = 2,
) -> dict[str, object]:
    """Activation checkpointing's trade: the same step measured with it off and on.

    Returns both measurements ("off", "on"), the peak memory checkpointing saved and
    the step time it added, in bytes and seconds and as fractions of the step without
    it (wall time, and CPU time, which a shared machine disturbs less).
    """
    off = measure_training_memory(
        model_config, replace(train_config, grad_checkpointing=False), hardware, steps
    )
    on = measure_training_memory(
        model_config, replace(train_config, grad_checkpointing=True), hardware, steps
    )
    return {
        "off": off,
        "on": on,
        "memory_saved": off.peak - on.peak,
        "memory_saved_fraction": 1 - on.peak / off.peak,
        "time_added": on.step_seconds - off.step_seconds,
        "time_added_fraction": on.step_seconds / off.step_seconds - 1,
        "cpu_time_added_fraction": on.step_cpu_seconds / off.step_cpu_seconds - 1,
    }
