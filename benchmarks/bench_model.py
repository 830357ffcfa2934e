"""Training speed of foundry_core's Transformer beside Hugging Face's LlamaForCausalLM.

    python benchmarks/bench_model.py [--steps 20] [--configs small,16m] [--bf16]

Both models get the same configuration and the same initial weights, and train with
AdamW on the same random batches. Their steps are interleaved one by one in this
process, so that machine noise hits both alike; the table reports median step times,
tokens/s, MFU and the median of the per-step speed ratios. MFU is measured against this
machine's own dense matmul throughput (benchmarks/bench_matmul.py), since a CPU has no
single published peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from foundry_core import ModelConfig, detect, measure_matmul_tflops
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


def make_step(model: torch.nn.Module, is_ours: bool, autocast: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(idx: torch.Tensor, targets: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
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


def bench(
    name: str,
    config: ModelConfig,
    batch: int,
    steps: int,
    warmup: int,
    autocast: bool,
    peak_tflops: float,
) -> dict[str, float]:
    torch.manual_seed(0)
    ours = Transformer(config).train()
    reference = hf_twin(ours).train()
    run_ours, run_ref = (
        make_step(ours, True, autocast),
        make_step(reference, False, autocast),
    )
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    for i in range(warmup + steps):
        idx = torch.randint(0, config.vocab_size, (batch, config.max_seq_len))
        targets = torch.roll(idx, -1, dims=1)
        order = (
            [("ours", run_ours), ("hf", run_ref)]
            if i % 2 == 0
            else [("hf", run_ref), ("ours", run_ours)]
        )
        for key, run in order:
            start = time.perf_counter()
            run(idx, targets)
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    tokens = batch * config.max_seq_len
    flops = config.flops_per_token(config.max_seq_len) * tokens
    ratios = [h / o for o, h in zip(times["ours"], times["hf"])]
    row = {
        "config": name,
        "params (M)": config.num_params() / 1e6,
        "dtype": "bf16" if autocast else "fp32",
    }
    for key in ("ours", "hf"):
        median = statistics.median(times[key])
        row[f"{key} ms/step"] = 1e3 * median
        row[f"{key} tok/s"] = tokens / median
        row[f"{key} MFU"] = flops / median / (peak_tflops * 1e12)
    row["speed ratio (median)"] = statistics.median(ratios)
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
        help="also run with bf16 autocast (if the CPU has bf16)",
    )
    args = parser.parse_args()
    info = detect("cpu")
    peak = measure_matmul_tflops("cpu", torch.float32, size=2048, seconds=2.0)
    import transformers

    print(
        f"{info} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
        f"transformers {transformers.__version__} | "
        f"matmul peak {peak * 1e3:.0f} GFLOP/s fp32"
    )
    modes = [False] + ([True] if args.bf16 and info.bf16 else [])
    if args.bf16 and not info.bf16:
        print(
            "bf16: skipped, this CPU has no native bf16 instructions "
            "(AVX512-BF16 / AMX)"
        )
    header = None
    for name in args.configs.split(","):
        for autocast in modes:
            row = bench(
                name,
                CONFIGS[name],
                args.batch,
                args.steps,
                args.warmup,
                autocast,
                peak
                if not autocast
                else measure_matmul_tflops("cpu", torch.bfloat16, 2048, 2.0),
            )
            if header is None:
                header = list(row)
                print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
            print("| " + " | ".join(_format(k, v) for k, v in row.items()) + " |")


def _format(key: str, value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    if key.endswith(("ms/step", "tok/s")):
        return f"{value:,.0f}"
    return f"{value:.3g}" if key.startswith("params") else f"{value:.2f}"


if __name__ == "__main__":
    main()
