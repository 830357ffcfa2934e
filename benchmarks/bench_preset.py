"""The first steps of a preset's real pretraining run, against the preset's estimates.

    python benchmarks/bench_preset.py [--preset a100] [--steps 50]
                                      [--no-compile | --compile-blocks]

The run is the recipe's own (`pipeline.pretrain_trainer`: the preset's model, token
files, batch, precision and torch.compile setting), written to a temporary folder and
never checkpointed. It prints each step's time, then tokens/s and MFU over the second
half of the steps (the first step also compiles), MFU against this device's measured
matmul peak and against the peak the preset was sized for, the time the preset
predicts for those steps (`Preset.estimate_seconds`), and on CUDA the allocator's peak
beside the analytic memory estimate (`Preset.estimate_memory`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from foundry_core import detect, get_preset, measure_matmul_tflops, select_preset
from foundry_core.hardware import GIB, choose_precision
from foundry_core.pipeline import ensure, pretrain_trainer


def report_step(record: dict, last: int) -> None:
    """Print the first steps, every tenth and the last, as they finish."""
    step = record["step"]
    if step <= 3 or step % 10 == 0 or step == last:
        print(
            f"step {step:>4}: {record['tokens'] / record['tokens_per_s']:7.3f} s, "
            f"loss {record['loss']:.3f}"
            + (f", val {record['val_loss']:.3f}" if "val_loss" in record else ""),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="default: the one picked for this machine")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--no-compile", action="store_true", help="train eagerly, whatever the preset"
    )
    parser.add_argument(
        "--compile-blocks",
        action="store_true",
        help="compile each block on its own instead of the whole model: one graph "
        "that every block reuses, so the first step compiles one layer, not all",
    )
    args = parser.parse_args()
    info = detect()
    preset = get_preset(args.preset) if args.preset else select_preset(info).preset
    if args.no_compile or args.compile_blocks:
        preset = replace(preset, train=replace(preset.train, compile=False))
    precision = choose_precision(info, preset.train.dtype)
    dtype = torch.bfloat16 if precision.dtype == "bfloat16" else torch.float32
    size = 8192 if info.device == "cuda" else 2048
    peak = measure_matmul_tflops(info.device, dtype, size, 2.0)
    train, model = preset.train, preset.model
    tokens_per_step = train.batch_size * train.seq_len * train.grad_accum_steps
    print(
        f"{info} | torch {torch.__version__} | preset {preset.name} "
        f"({preset.hardware}): {model.num_params() / 1e6:.1f}M parameters, "
        f"{train.batch_size} x {train.seq_len} x {train.grad_accum_steps} = "
        f"{tokens_per_step:,} tokens/step, {precision.dtype}, "
        f"compile {'blocks' if args.compile_blocks else train.compile} | "
        f"matmul peak {peak:.3g} TFLOP/s "
        f"{precision.dtype} ({size}^3)"
    )
    started = time.perf_counter()
    ensure("tokens", preset)
    print(f"token files ready in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as out:
        trainer = pretrain_trainer(
            preset,
            out,
            checkpoint_interval=10**9,
            hardware=info,
            peak_tflops=None,
            callbacks=(lambda _, record: report_step(record, args.steps),),
        )
        if args.compile_blocks:
            for block in trainer.model.layers:
                block.compile()
        if info.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        history = trainer.fit(args.steps)
    seconds = [r["tokens"] / r["tokens_per_s"] for r in history]
    steady = seconds[len(seconds) // 2 :]
    step_s = statistics.median(steady)
    rate = tokens_per_step / step_s
    flops = model.flops_per_token(train.seq_len) * rate
    # the whole run's estimate, scaled to these steps (every step is alike)
    predicted = preset.estimate_seconds() * args.steps / train.max_steps
    print(
        f"\n| steps | first step s | median step s (last {len(steady)}) | tokens/s | "
        f"MFU vs measured {peak:.3g} | MFU vs preset's {preset.peak_tflops:g} | "
        f"{args.steps} steps: measured s | {args.steps} steps: estimate s |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {args.steps} | {seconds[0]:.1f} | {step_s:.3f} | {rate:,.0f} | "
        f"{flops / (peak * 1e12):.2f} | {flops / (preset.peak_tflops * 1e12):.2f} | "
        f"{sum(seconds):.1f} | {predicted:.1f} |"
    )
    estimate = preset.estimate_memory(info)
    parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in estimate.parts().items())
    if info.device == "cuda":
        measured = torch.cuda.max_memory_allocated()
        print(
            f"peak memory: measured {measured / GIB:.2f} GiB "
            "(torch.cuda.max_memory_allocated), "
            f"estimate {estimate.total / GIB:.2f} GiB ({parts}); "
            f"measured / estimate {measured / estimate.total:.2f}"
        )
    else:
        print(f"memory estimate {estimate.total / GIB:.2f} GiB ({parts})")


if __name__ == "__main__":
    main()
