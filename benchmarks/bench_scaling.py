"""DDP and FSDP over CPU processes on one machine, and activation checkpointing's trade.

    python benchmarks/bench_scaling.py [--preset ci] [--steps 8] [--repeats 3]
                                       [--skip-data-parallel] [--skip-checkpointing]

On a machine shared with other jobs, run it with OMP_NUM_THREADS=1: part 2 then uses one
thread, and two OpenMP threads fighting other processes for two cores can run many times
slower than one.

Part 1 trains the same model at the same global batch four ways, each in fresh processes
launched like a reader would (torchrun for the parallel runs): 1 process x 1 thread (the
speed of one core), 1 process x all threads (what one process does with the whole
machine), and N processes x 1 thread with DDP, then with FSDP (gloo). Scaling
efficiency = tokens/s of N processes / (N x tokens/s of one single-thread process): 1.0
would be perfect; the rest is communication and contention for memory bandwidth. The
final losses must agree: the processes compute the same step.

Part 2 measures one training step of the `cpu` preset with and without activation
checkpointing (foundry_core.memory.measure_checkpointing): peak memory (profiler, see
memory.py) and median step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from foundry_core import detect, estimate_memory
from foundry_core.hardware import HardwareInfo
from foundry_core.memory import measure_checkpointing
from foundry_core.model import Transformer
from foundry_core.presets import PRESETS, with_overrides
from foundry_core.train import Trainer

MIB = 1024**2


def worker(args: argparse.Namespace) -> None:
    """One process of a run (alone, or under torchrun): train, then rank 0 writes its
    timings as JSON."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group("gloo")
        rank = torch.distributed.get_rank()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    train = with_overrides(
        preset,
        batch_size=args.global_batch // world,
        max_steps=args.steps + args.warmup,
        warmup_steps=1,
        eval_interval=10_000,
    ).train
    tokens = (
        np.random.default_rng(0)
        .integers(0, preset.model.vocab_size, 1_000_000)
        .astype(np.uint16)
    )
    torch.manual_seed(0)
    trainer = Trainer(
        Transformer(preset.model),
        train,
        tokens,
        hardware=HardwareInfo("cpu", "cpu", None, False),
        rank=rank,
        world_size=world,
        parallel=args.parallel,
    )
    history = trainer.fit()
    if rank == 0:
        speeds = [h["tokens_per_s"] for h in history[args.warmup :]]
        Path(args.out).write_text(
            json.dumps(
                {"tokens_per_s": statistics.median(speeds), "loss": history[-1]["loss"]}
            )
        )
    if "WORLD_SIZE" in os.environ:
        torch.distributed.destroy_process_group()


def launch(
    args: argparse.Namespace, processes: int, threads: int, parallel: str, out: Path
) -> dict:
    """Run fresh worker processes (torchrun when parallel) and read rank 0's result."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--preset",
        args.preset,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--global-batch",
        str(args.global_batch),
        "--threads",
        str(threads),
        "--parallel",
        parallel,
        "--out",
        str(out),
    ]
    if processes > 1 or parallel == "fsdp":
        command[1:1] = [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(
            f"run failed ({processes} processes, {parallel}):\n{result.stderr[-3000:]}"
        )
    return json.loads(out.read_text())


def data_parallel(args: argparse.Namespace, cores: int) -> None:
    n = args.processes
    preset = PRESETS[args.preset]
    print(
        f"\n### DDP / FSDP: {args.preset} preset "
        f"({preset.model.num_params() / 1e6:.3g}M parameters), "
        f"global batch {args.global_batch} x {preset.train.seq_len}, "
        f"median of {args.steps} steps after {args.warmup}\n"
    )
    runs = [
        ("1 process x 1 thread", 1, 1, "ddp"),
        (f"1 process x {cores} threads", 1, cores, "ddp"),
        (f"DDP {n} processes x 1 thread", n, 1, "ddp"),
        (f"FSDP {n} processes x 1 thread", n, 1, "fsdp"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            name: launch(args, p, t, par, Path(tmp) / f"{i}.json")
            for i, (name, p, t, par) in enumerate(runs)
        }
    one_core = results["1 process x 1 thread"]["tokens_per_s"]
    print(
        "| run | tokens/s | vs 1 process x 1 thread | scaling efficiency | final loss |"
    )
    print("|---|---|---|---|---|")
    for name, processes, _, _ in runs:
        r = results[name]
        efficiency = (
            f"{r['tokens_per_s'] / (processes * one_core):.2f}" if processes > 1 else ""
        )
        print(
            f"| {name} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / one_core:.2f}x | {efficiency} | {r['loss']:.5f} |"
        )


def checkpointing(args: argparse.Namespace, info: HardwareInfo) -> None:
    """Off and on, measured `repeats` times in alternation (machine noise hits both
    alike); median times."""
    preset = with_overrides(PRESETS["cpu"], batch_size=args.ckpt_batch)
    print(
        "\n### Activation checkpointing: cpu preset, "
        f"batch {args.ckpt_batch} x {preset.train.seq_len}, "
        f"{torch.get_num_threads()} thread(s), "
        f"median of {args.repeats} x {args.steps} steps\n"
    )
    rounds = [
        measure_checkpointing(preset.model, preset.train, info, steps=args.steps)
        for _ in range(args.repeats)
    ]
    wall = {
        key: statistics.median(r[key].step_seconds for r in rounds)
        for key in ("off", "on")
    }
    cpu = {
        key: statistics.median(r[key].step_cpu_seconds for r in rounds)
        for key in ("off", "on")
    }
    print(
        "| checkpointing | estimated peak (MiB) | measured peak (MiB) "
        "| activations at peak (MiB) | step s (wall) | step s (CPU) |"
    )
    print("|---|---|---|---|---|---|")
    for key in ("off", "on"):
        m = rounds[0][key]
        estimate = estimate_memory(
            preset.model,
            with_overrides(preset, grad_checkpointing=key == "on").train,
            info,
        )
        print(
            f"| {key} | {(estimate.total - estimate.runtime) / MIB:.1f} | "
            f"{m.peak / MIB:.1f} | {m.activations / MIB:.1f} | "
            f"{wall[key]:.2f} | {cpu[key]:.2f} |"
        )
    saved = rounds[0]["memory_saved"]
    print(
        f"\ncheckpointing saved {saved / MIB:.1f} MiB "
        f"({rounds[0]['memory_saved_fraction']:.0%} of the peak) and "
        f"added {wall['on'] / wall['off'] - 1:+.0%} wall time, "
        f"{cpu['on'] / cpu['off'] - 1:+.0%} CPU time per step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        default="ci",
        choices=list(PRESETS)[:2],
        help="model of part 1 (ci or cpu)",
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--ckpt-batch",
        type=int,
        default=16,
        help="batch of part 2 (the cpu preset's is 16)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternating off/on measurements in part 2",
    )
    parser.add_argument("--skip-checkpointing", action="store_true")
    parser.add_argument("--skip-data-parallel", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--parallel", default="ddp", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.global_batch % args.processes:
        raise SystemExit(
            f"--global-batch {args.global_batch} must be divisible by "
            f"--processes {args.processes}"
        )
    info = detect("cpu")
    cores = info.cpu_cores
    print(
        f"{info} | {cores} cores | torch {torch.__version__} | gloo | load average "
        f"{os.getloadavg()[0]:.1f} at the start"
    )
    if not args.skip_data_parallel:
        data_parallel(args, cores)
    if not args.skip_checkpointing:
        checkpointing(args, info)


if __name__ == "__main__":
    main()
