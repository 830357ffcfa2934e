"""foundry_core.quantize beside fp32, bf16 and torch's dynamic int8: size, speed, error.

    python benchmarks/bench_quant.py [--repeats 10] [--prompt 64] [--decode 32]
                                     [--preset cpu] [--d-ff 768]
                                     [--checkpoint runs/cpu/step-000300]

One model (the preset's config, random init, or the weights of a training checkpoint) is
copied into each variant. Sizes count real storage: "Linear" is the Linear layers of the
blocks (what is quantized; the tied output layer is the embedding and stays in float),
"model" every parameter and buffer once. Speed is one forward pass over a batch-1 prompt
(prefill), divided by its length, and greedy decoding with the KV cache (decode, ms per
new token: the memory-bound case that quantization targets); the variants take turns
every repeat so that noise from the machine hits all alike, and medians are reported.
The error is the largest |logit - fp32 logit| over the prompt.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from foundry_core import ModelConfig, detect, get_preset
from foundry_core.checkpoint import STATE, load_checkpoint
from foundry_core.generate import decode_ms_per_token
from foundry_core.model import Transformer
from foundry_core.quantize import (
    cast_weights,
    linear_size_bytes,
    model_size_bytes,
    quantize_model,
    torch_dynamic_int8,
)


def load_model(args: argparse.Namespace) -> Transformer:
    if args.checkpoint:
        state = torch.load(
            Path(args.checkpoint) / STATE, map_location="cpu", weights_only=True
        )
        model = Transformer(ModelConfig.from_dict(state["model_config"]))
        load_checkpoint(args.checkpoint, model)
        return model.eval()
    config = get_preset(args.preset).model
    if args.d_ff:
        config = dataclasses.replace(config, d_ff=args.d_ff)
    torch.manual_seed(0)
    return Transformer(config).eval()


def int4(model: Transformer, group_size: int) -> tuple[nn.Module, str]:
    """int4 with this group size; layers whose width it does not divide stay in float
    (and are named)."""
    kept = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.in_features % group_size
    ]
    kept = [n for n in kept if not n.endswith("lm_head")]
    note = ""
    if kept:
        kinds = sorted({n.rpartition(".")[2] for n in kept})
        widths = sorted({model.get_submodule(n).in_features for n in kept})
        note = (
            f"{len(kept)} layers kept fp32 ({', '.join(kinds)}: "
            f"in_features {widths} % {group_size} != 0)"
        )
    quantized = quantize_model(
        copy.deepcopy(model), "int4", group_size, skip=("lm_head", *kept)
    )
    return quantized, note


def variants(model: Transformer) -> list[tuple[str, nn.Module, str]]:
    rows = [
        ("fp32", model, ""),
        ("bf16 (weights cast)", cast_weights(model, torch.bfloat16), ""),
        ("int8 per-row", quantize_model(copy.deepcopy(model), "int8"), ""),
    ]
    for group_size in (32, 64, 128):
        rows.append((f"int4 g{group_size}", *int4(model, group_size)))
    try:
        rows.append(
            (
                "torch dynamic int8",
                torch_dynamic_int8(model),
                "per-tensor weights, int8 activations",
            )
        )
    except RuntimeError as err:
        print(f"torch dynamic int8: skipped ({err})")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument(
        "--decode", type=int, default=32, help="new tokens per decoding run (0: skip)"
    )
    parser.add_argument("--preset", default="cpu")
    parser.add_argument(
        "--d-ff", type=int, default=0, help="override the preset's SwiGLU width"
    )
    parser.add_argument(
        "--checkpoint", default="", help="a step-NNNNNN folder written by the Trainer"
    )
    args = parser.parse_args()
    model = load_model(args)
    c = model.config
    prompt = torch.randint(
        0, c.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(1)
    )
    rows = variants(model)
    times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    outputs = {}
    decode: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            for name, variant, _ in rows if i % 2 == 0 else rows[::-1]:
                start = time.perf_counter()
                outputs[name] = variant(prompt)[0].float()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
                    if args.decode:
                        decode[name].append(
                            decode_ms_per_token(
                                variant, prompt[0, :16].tolist(), args.decode, 1
                            )
                        )
    weights = (
        "checkpoint " + args.checkpoint
        if args.checkpoint
        else f"{args.preset} preset, random init"
    )
    print(
        f"{detect('cpu')} | {torch.get_num_threads()} threads | "
        f"torch {torch.__version__} | {weights}: "
        f"vocab {c.vocab_size}, d_model {c.d_model}, {c.n_layers} layers, "
        f"d_ff {c.d_ff}, tied {c.tie_embeddings} | "
        f"batch 1, prompt {args.prompt}, median of {args.repeats}"
    )
    print(
        "| variant | Linear MB | model MB | Linear vs fp32 | model vs fp32 "
        "| prefill ms/token | decode ms/token | max abs logit diff | notes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base_linear = linear_size_bytes(model)
    base_model = model_size_bytes(model)
    for name, variant, note in rows:
        linear, total = linear_size_bytes(variant), model_size_bytes(variant)
        ms = 1e3 * statistics.median(times[name]) / args.prompt
        decode_ms = f"{statistics.median(decode[name]):.3f}" if decode[name] else "-"
        diff = (outputs[name] - outputs["fp32"]).abs().max().item()
        print(
            f"| {name} | {linear / 1e6:.2f} | {total / 1e6:.2f} | "
            f"{base_linear / linear:.2f}x | {base_model / total:.2f}x | "
            f"{ms:.3f} | {decode_ms} | {diff:.2e} | {note} |"
        )


if __name__ == "__main__":
    main()
