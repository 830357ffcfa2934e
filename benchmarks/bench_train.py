"""The Trainer's cost over a bare training step and what bf16 autocast buys on this CPU.

    python benchmarks/bench_train.py [--steps 12]

The reference is the bare step of bench_model.py (forward, backward, AdamW, nothing
else) on the same `small` config, batch 16 x 256, interleaved with the Trainer's steps
(learning-rate schedule, gradient clipping, metrics, loader) in one process. bf16 is
measured only where the CPU has native bf16.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from bench_model import CONFIGS, make_step

from foundry_core import TrainConfig, detect
from foundry_core.model import Transformer
from foundry_core.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    info = detect("cpu")
    config = CONFIGS["small"]
    total = args.steps + args.warmup
    tokens = (
        np.random.default_rng(0)
        .integers(0, config.vocab_size, 2_000_000)
        .astype(np.uint16)
    )
    print(
        f"{info} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
        "small config, batch 16 x 256"
    )
    modes = ["float32"] + (["bfloat16"] if info.bf16 else [])
    if not info.bf16:
        print(
            "bf16: not measured, this CPU has no native bf16 instructions "
            "(AVX512-BF16 / AMX)"
        )
    for dtype in modes:
        torch.manual_seed(0)
        train = TrainConfig(
            batch_size=16,
            seq_len=256,
            max_steps=total,
            warmup_steps=1,
            dtype=dtype,
            eval_interval=10_000,
        )
        trainer = Trainer(Transformer(config), train, tokens, hardware=info)
        bare_model = Transformer(config).train()
        bare = make_step(bare_model, True, dtype == "bfloat16")
        batches = iter(torch.utils.data.DataLoader(trainer.train_data, batch_size=16))
        bare_times = []

        # a bare step after every Trainer step
        def interleave(_trainer, _record) -> None:
            x, y = next(batches)
            start = time.perf_counter()
            bare(x, y)
            bare_times.append(time.perf_counter() - start)

        trainer.callbacks = (interleave,)
        history = trainer.fit()
        times = {
            "trainer": [16 * 256 / h["tokens_per_s"] for h in history[args.warmup :]],
            "bare": bare_times[args.warmup :],
        }
        t, b = statistics.median(times["trainer"]), statistics.median(times["bare"])
        print(
            f"| {dtype} | Trainer {16 * 256 / t:,.0f} tok/s | "
            f"bare step {16 * 256 / b:,.0f} tok/s | Trainer / bare {b / t:.2f} |"
        )


if __name__ == "__main__":
    main()
