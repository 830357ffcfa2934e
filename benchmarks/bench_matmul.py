"""PyTorch's dense matmul throughput on this machine, beside NumPy's BLAS for reference.

    python benchmarks/bench_matmul.py [--seconds 1.0] [--model small,16m]

The number is the ceiling of every training run here: chapter 0 uses it to turn a
preset's FLOPs into an expected time, and the `cpu` preset's "~0.1 TFLOP/s" comes from
this script on a 2-core runner.

`--model` times, instead of square products, the weight products of one training step
of bench_model.py's configs (batch 16 x 256): each linear layer's forward product and
the two of its backward pass, at the model's own shapes. Their sum is what a step
would take if nothing else (attention, norms, the softmax, the optimizer) took any
time, so it bounds the MFU a step of that model can reach on this machine.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

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


def product_ms(rows: int, d_in: int, d_out: int, dtype: torch.dtype) -> float:
    """Median ms of a linear layer's three training products: forward x @ W.T, and
    backward g @ W (for x's gradient) and g.T @ x (for W's)."""
    from bench_generate import timed

    x, w = torch.randn(rows, d_in, dtype=dtype), torch.randn(d_out, d_in, dtype=dtype)
    g = torch.randn(rows, d_out, dtype=dtype)
    total = 0.0
    for product in (lambda: x @ w.T, lambda: g @ w, lambda: g.T @ x):
        product()  # warm-up: the first call picks the kernel
        total += timed(product, repeats=7)[1]
    return 1e3 * total


def model_products(names: str, batch: int = 16) -> None:
    """The products of a training step of bench_model.py's configs (see above)."""
    from bench_model import model_config

    from foundry_core.model import Transformer

    info = detect()
    dtypes = [torch.float32] + ([torch.bfloat16] if info.bf16 else [])
    peaks = {dt: measure_matmul_tflops("cpu", dt, 2048, 2.0) for dt in dtypes}
    print("| config | dtype | products ms/step | their TFLOP/s | peak | MFU ceiling |")
    print("|---|---|---|---|---|---|")
    for name in names.split(","):
        c = model_config(name)
        rows = batch * c.max_seq_len
        # (in, out) of every linear layer, the output layer included, by how often
        shapes = Counter(
            (m.in_features, m.out_features)
            for m in Transformer(c).modules()
            if isinstance(m, torch.nn.Linear)
        )
        step_flops = c.flops_per_token(c.max_seq_len) * rows
        flops = sum(6 * rows * d_in * d_out * n for (d_in, d_out), n in shapes.items())
        for dtype in dtypes:
            ms = sum(n * product_ms(rows, *s, dtype) for s, n in shapes.items())
            print(
                f"| {name} | {str(dtype).removeprefix('torch.')} | {ms:,.0f} | "
                f"{flops / ms / 1e9:.2f} | {peaks[dtype]:.2f} | "
                f"{step_flops / (ms / 1e3) / (peaks[dtype] * 1e12):.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="time per measurement"
    )
    parser.add_argument(
        "--model",
        help="bench_model.py configs (comma-separated) whose step products to time",
    )
    args = parser.parse_args()
    if args.model:
        model_products(args.model)
        return
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
