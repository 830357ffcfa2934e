"""Speed of foundry_core.generate beside transformers' generate(), KV cache on and off.

    python benchmarks/bench_generate.py [--prompt 32] [--new 200] [--repeats 3]
                                        [--device cuda]

Both models have the same configuration and weights (the `small` config of
bench_model.py); batch 1, greedy decoding, the same random prompt. Reports tokens/s
(median of the repeats) and checks that the two produce the same tokens.

Then two more rows, each the fastest batch-1 path of its library: our engine (one
slot) with its fixed-shape step recorded as a CUDA graph on a GPU or compiled on a CPU
(`Engine(compile=True)`), and transformers with a static cache, which its generate()
may compile (torch.compile); their first, untimed call records or compiles.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_model import CONFIGS, hf_twin, sync

from foundry_core import detect
from foundry_core.engine import Engine
from foundry_core.generate import generate
from foundry_core.model import Transformer


def timed(fn, repeats: int, device: str = "cpu") -> tuple[list, float]:
    result, times = None, []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    info = detect(args.device)  # a clear error where there is no such device
    import transformers

    config = CONFIGS["small"]
    torch.manual_seed(0)
    ours = Transformer(config).eval()
    theirs = hf_twin(ours).eval().to(args.device)
    ours = ours.to(args.device)
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt)).to(args.device)
    print(
        f"{info} | {torch.get_num_threads()} threads | "
        f"torch {torch.__version__} | transformers {transformers.__version__} | "
        f"prompt {args.prompt}, {args.new} new tokens, greedy"
    )
    rows = []
    for cache in (True, False):
        ids, ours_s = timed(
            lambda: generate(ours, prompt, args.new, temperature=0, use_cache=cache)[0],
            args.repeats,
            args.device,
        )
        with torch.no_grad():
            out, hf_s = timed(
                lambda: theirs.generate(
                    prompt,
                    max_new_tokens=args.new,
                    min_new_tokens=args.new,
                    do_sample=False,
                    use_cache=cache,
                    pad_token_id=0,
                )[0, args.prompt :].tolist(),
                args.repeats,
                args.device,
            )
        rows.append((cache, args.new / ours_s, args.new / hf_s, ids == out))
    print(
        "| KV cache | ours tok/s | transformers tok/s | ratio | same tokens |\n"
        "|---|---|---|---|---|"
    )
    for cache, ours_rate, hf_rate, same in rows:
        print(
            f"| {'on' if cache else 'off'} | {ours_rate:,.0f} | {hf_rate:,.0f} | "
            f"{ours_rate / hf_rate:.2f} | {same} |"
        )
    print(
        f"cache speed-up: ours {rows[0][1] / rows[1][1]:.1f}x, "
        f"transformers {rows[0][2] / rows[1][2]:.1f}x"
    )
    fastest_paths(ours, theirs, prompt, args, hf_rate=rows[0][2])


def first_then_timed(fn, label: str, args) -> tuple[list, float]:
    """A first, untimed call (it records or compiles; its time is printed), then the
    timed repeats."""
    start = time.perf_counter()
    fn()
    print(f"{label}: first call {time.perf_counter() - start:.1f} s")
    return timed(fn, args.repeats, args.device)


def fastest_paths(ours, theirs, prompt, args, hf_rate: float) -> None:
    """Our engine's fixed-shape step (a CUDA graph, or compiled on a CPU), and
    transformers' static cache."""
    cuda = args.device == "cuda"
    engine = Engine(ours, slots=1, cuda_graphs=cuda, compile=not cuda)
    name = "engine + CUDA graphs" if cuda else "engine, compiled step"
    greedy = generate(ours, prompt, args.new, temperature=0)[0]

    def served() -> list[int]:
        request = engine.submit(prompt[0].tolist(), args.new)
        engine.run()
        return request.output

    print()
    ids, seconds = first_then_timed(served, f"{name} (records or compiles)", args)
    print(
        f"{name}: {args.new / seconds:,.0f} tok/s, "
        f"{args.new / seconds / hf_rate:.2f}x transformers' generate with its "
        f"default cache, same tokens as our generate: {ids == greedy}"
    )

    def static() -> list[int]:
        with torch.no_grad():
            return theirs.generate(
                prompt,
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                pad_token_id=0,
                use_cache=True,  # hf_twin turns it off, for training
                cache_implementation="static",
            )[0, args.prompt :].tolist()

    out, hf_seconds = first_then_timed(
        static, "transformers, static cache (may compile)", args
    )
    print(
        f"transformers, static cache: {args.new / hf_seconds:,.0f} tok/s; "
        f"{name} / it: {hf_seconds / seconds:.2f}x, "
        f"same tokens: {out == greedy}"
    )


if __name__ == "__main__":
    main()
