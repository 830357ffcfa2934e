"""Training speed of foundry_core's Transformer beside Hugging Face's LlamaForCausalLM.

    python benchmarks/bench_model.py [--steps 20] [--configs small,16m] [--bf16]
                                     [--device cuda] [--compile] [--skip-fp32]
                                     [--separate] [--loss-chunk ELEMENTS]

Both models get the same configuration and the same initial weights, and train with
fused AdamW on the same random batches. Their steps are interleaved one by one in this
process, so that machine noise hits both alike; the table reports median step times,
tokens/s, MFU and the median of the per-step speed ratios. MFU is measured against this
machine's own dense matmul throughput (benchmarks/bench_matmul.py), since a CPU has no
single published peak. A config may also be a preset's name (`a100`): its model at its
context length. `--compile` adds a bf16 row (fp32 where bf16 is missing) with both
models under torch.compile, and its compile time: the first step's time beyond a
measured step.

`--separate` steps each model alone in a fresh process instead, in turn, twice (ours,
hf, ours, hf), and the ratio is that of the medians: on some CPUs (seen on an Intel Xeon
with AMX) two models stepped in one process slow each other down, the reference more
than ours, so the interleaved ratio flatters us there.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from foundry_core import ModelConfig, detect, get_preset, losses, measure_matmul_tflops
from foundry_core.model import Transformer

CONFIGS = {
    # Untied output layers, as in transformers' LlamaConfig defaults (and "~16M"
    # parameters for the second).
    "small": ModelConfig(
        vocab_size=8192,
        d_model=256,
        n_layers=6,
        n_heads=8,
        n_kv_heads=4,
        d_ff=688,
        max_seq_len=256,
        tie_embeddings=False,
    ),
    "16m": ModelConfig(
        vocab_size=8192,
        d_model=384,
        n_layers=6,
        n_heads=6,
        n_kv_heads=2,
        d_ff=1024,
        max_seq_len=256,
        tie_embeddings=False,
    ),
}


def hf_twin(model: Transformer):
    """A transformers LlamaForCausalLM with the same configuration and weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.d_model,
            intermediate_size=c.d_ff,
            num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_heads,
            num_key_value_heads=c.n_kv_heads,
            max_position_embeddings=c.max_seq_len,
            rms_norm_eps=c.norm_eps,
            rope_theta=c.rope_base,
            tie_word_embeddings=c.tie_embeddings,
            attn_implementation="sdpa",
            use_cache=False,
        )
    )
    from foundry_core.export import to_hf_state_dict

    hf.load_state_dict(to_hf_state_dict(model), strict=not c.tie_embeddings)
    return hf


def model_config(name: str) -> ModelConfig:
    """One of CONFIGS, or the model of the preset called `name`."""
    return CONFIGS[name] if name in CONFIGS else get_preset(name).model


def sync(device: str) -> None:
    """Wait for the device's queued work: a GPU runs asynchronously."""
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(
    model: torch.nn.Module, is_ours: bool, autocast: bool, device: str = "cpu"
):
    # fused, for both: our Trainer's choice on a CPU or CUDA GPU (optim.fused_adamw) and
    # transformers' Trainer's default
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(idx: torch.Tensor, targets: torch.Tensor) -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = (
                model(idx, targets)[1]
                if is_ours
                else model(input_ids=idx, labels=targets).loss
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def step_times(
    keys: tuple[str, ...],
    config: ModelConfig,
    batch: int,
    steps: int,
    autocast: bool,
    device: str,
    compile: bool,
):
    """The time of each step, by model, of the models named in `keys` ("ours",
    "hf"), all made from one seed and stepped on the same random batches; with both,
    their steps are interleaved one by one and the order alternates every step."""
    torch.manual_seed(0)
    ours = Transformer(config).train()
    models = {k: ours if k == "ours" else hf_twin(ours).train() for k in keys}
    runs = {}
    for key, model in models.items():
        model = torch.compile(model.to(device)) if compile else model.to(device)
        runs[key] = make_step(model, key == "ours", autocast, device)
    times: dict[str, list[float]] = {key: [] for key in keys}
    batches = torch.Generator().manual_seed(1)
    for i in range(steps):
        idx = torch.randint(
            0, config.vocab_size, (batch, config.max_seq_len), generator=batches
        )
        idx = idx.to(device)
        targets = torch.roll(idx, -1, dims=1)
        for key in keys if i % 2 == 0 else keys[::-1]:
            sync(device)
            start = time.perf_counter()
            runs[key](idx, targets)
            sync(device)
            times[key].append(time.perf_counter() - start)
    return times


def bench(
    name: str,
    config: ModelConfig,
    batch: int,
    steps: int,
    warmup: int,
    autocast: bool,
    peak_tflops: float,
    device: str = "cpu",
    compile: bool = False,
    separate: bool = False,
) -> dict[str, float]:
    keys = ("ours", "hf")
    run = (config, batch, warmup + steps, autocast, device, compile)
    if separate:
        # each model alone in a fresh process, in turn: ours, hf, ours, hf
        times = {key: [] for key in keys}
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, spawn, max_tasks_per_child=1) as pool:
            for _ in range(2):
                for key in keys:
                    alone = pool.submit(step_times, (key,), *run).result()
                    times[key] += alone[key]
        first = {key: times[key][0] for key in keys}
        measured = [
            *range(warmup, warmup + steps),
            *range(2 * warmup + steps, len(times["ours"])),
        ]
        times = {key: [t[i] for i in measured] for key, t in times.items()}
        ratios = [statistics.median(times["hf"]) / statistics.median(times["ours"])]
    else:
        all_times = step_times(keys, *run)
        first = {key: t[0] for key, t in all_times.items()}
        times = {key: t[warmup:] for key, t in all_times.items()}
        ratios = [h / o for o, h in zip(times["ours"], times["hf"])]
    tokens = batch * config.max_seq_len
    flops = config.flops_per_token(config.max_seq_len) * tokens
    row = {
        "config": name,
        "params (M)": config.num_params() / 1e6,
        "dtype": ("bf16" if autocast else "fp32") + (" compiled" if compile else ""),
    }
    for key in ("ours", "hf"):
        median = statistics.median(times[key])
        row[f"{key} ms/step"] = 1e3 * median
        row[f"{key} tok/s"] = tokens / median
        row[f"{key} MFU"] = flops / median / (peak_tflops * 1e12)
    row["speed ratio (median)"] = statistics.median(ratios)
    row["compile s (ours, hf)"] = (
        ", ".join(
            f"{first[k] - statistics.median(times[k]):.1f}" for k in ("ours", "hf")
        )
        if compile
        else ""
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--configs", default="small,16m")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also run with bf16 autocast (if the device has bf16)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--compile", action="store_true", help="also run both under torch.compile"
    )
    parser.add_argument(
        "--skip-fp32", action="store_true", help="no fp32 rows (with --bf16)"
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="each model alone in its own process, in turn (ours, hf, ours, hf), "
        "instead of interleaved in one; the ratio is then of the medians",
    )
    parser.add_argument(
        "--loss-chunk",
        type=int,
        help="logits per chunk of our fused loss, on any device (default: "
        "losses.chunk_elements)",
    )
    args = parser.parse_args()
    if args.loss_chunk and args.separate:
        parser.error("--loss-chunk sets this process's chunks: not with --separate")
    if args.loss_chunk:
        losses.CHUNK_ELEMENTS = losses.GPU_CHUNK_ELEMENTS = args.loss_chunk
    device = args.device
    info = detect(device)
    # a GPU needs large products to reach its peak; a CPU reaches it early
    size = 8192 if device == "cuda" else 2048
    peaks = {False: measure_matmul_tflops(device, torch.float32, size, 2.0)}
    if info.bf16:
        peaks[True] = measure_matmul_tflops(device, torch.bfloat16, size, 2.0)
    import transformers

    print(
        f"{info} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
        f"transformers {transformers.__version__} | matmul peak "
        + ", ".join(
            f"{peak:.3g} TFLOP/s {'bf16' if bf16 else 'fp32'}"
            for bf16, peak in peaks.items()
        )
    )
    modes = [] if args.skip_fp32 and args.bf16 else [(False, False)]
    modes += [(True, False)] if args.bf16 and info.bf16 else []
    if args.compile:
        modes.append((info.bf16, True))
    if args.bf16 and not info.bf16:
        print("bf16: skipped, this device has no native bf16 (AVX512-BF16 / AMX)")
    header = None
    for name in args.configs.split(","):
        for autocast, compile in modes:
            try:
                row = bench(
                    name,
                    model_config(name),
                    args.batch,
                    args.steps,
                    args.warmup,
                    autocast,
                    peaks[autocast],
                    device,
                    compile,
                    args.separate,
                )
            except Exception as error:  # a compiler failure must not lose the rest
                if not compile:
                    raise
                print(f"| {name} | compiled: failed, {type(error).__name__}: {error}")
                continue
            if header is None:
                header = list(row)
                print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
            print(
                "| " + " | ".join(_format(k, v) for k, v in row.items()) + " |",
                flush=True,
            )


def _format(key: str, value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    if key.endswith(("ms/step", "tok/s")):
        return f"{value:,.0f}"
    return f"{value:.3g}" if key.startswith("params") else f"{value:.2f}"


if __name__ == "__main__":
    main()
