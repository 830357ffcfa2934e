"""PyTorch's dense matmul throughput on this machine, beside NumPy's BLAS for reference.

    python benchmarks/bench_matmul.py [--seconds 1.0]

The number is the ceiling of every training run here: chapter 0 uses it to turn a
preset's FLOPs into an expected time, and the `cpu` preset's "~0.1 TFLOP/s" comes from
this script on a 2-core runner.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from foundry_core import detect, measure_matmul_tflops


def numpy_tflops(size: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="time per measurement"
    )
    args = parser.parse_args()
    info = detect()
    print(
        f"{info} | torch {torch.__version__} ({torch.get_num_threads()} threads) | "
        f"numpy {np.__version__}"
    )
    print(
        f"{'size':>6} {'dtype':>9} {'torch GFLOP/s':>14} "
        f"{'numpy GFLOP/s':>14} {'ratio':>6}"
    )
    for size in (256, 512, 1024, 2048):
        ours = measure_matmul_tflops("cpu", torch.float32, size, args.seconds)
        ref = numpy_tflops(size, args.seconds)
        print(
            f"{size:>6} {'float32':>9} {ours * 1e3:>14.1f} "
            f"{ref * 1e3:>14.1f} {ours / ref:>6.2f}"
        )
        if info.device == "cpu" and info.bf16:
            bf16 = measure_matmul_tflops("cpu", torch.bfloat16, size, args.seconds)
            print(f"{size:>6} {'bfloat16':>9} {bf16 * 1e3:>14.1f} {'-':>14} {'-':>6}")
    if info.device != "cpu":
        dtype = torch.bfloat16 if info.bf16 else torch.float16
        accel = measure_matmul_tflops(info.device, dtype, 4096, args.seconds)
        print(f"{info.device} {dtype}: {accel:.1f} TFLOP/s at 4096 x 4096")


if __name__ == "__main__":
    main()
