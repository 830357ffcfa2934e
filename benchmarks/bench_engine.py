"""The inference engine: continuous batching against static batches of `generate`, and
speculative decoding against plain greedy decoding and transformers' assisted
generation (the same draft model).

    python benchmarks/bench_engine.py [--preset ci] [--requests 32] [--repeats 3]
                                      [--device cuda]

The models are the preset's pretrained model, its draft (`ensure_draft`) and the draft
distilled on the model's own output (`ensure_distilled_draft`), built into the course's
cache if missing. Requests: prompts of 8-32 tokens cut from the
validation text, each asking for 8-64 new tokens, all waiting at the start. Static
batching serves them `slots` at a time in arrival order, each batch as long as its
longest answer; a request's latency is the time until its batch (or, in the engine,
the request itself) is done.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from bench_generate import timed
from bench_model import hf_twin, sync

from foundry_core import detect, get_preset
from foundry_core.data import read_tokens
from foundry_core.engine import Engine
from foundry_core.generate import generate
from foundry_core.pipeline import (
    ensure,
    ensure_distilled_draft,
    ensure_draft,
    ensure_pretrained,
)
from foundry_core.speculative import speculative_generate


def make_requests(preset, n: int, seed: int = 0) -> list[tuple[list[int], int]]:
    tokens = read_tokens(ensure("tokens", preset).validation)
    rng = np.random.default_rng(seed)
    longest = min(64, preset.model.max_seq_len - 32)
    requests = []
    for _ in range(n):
        start = int(rng.integers(0, len(tokens) - 32))
        prompt = [int(t) for t in tokens[start : start + int(rng.integers(8, 33))]]
        requests.append((prompt, int(rng.integers(8, longest))))
    return requests


def device_of(model) -> str:
    return next(model.parameters()).device.type


def engine_run(requests, engine: Engine) -> tuple[float, list[float], list]:
    device = device_of(engine.model)
    submitted = [engine.submit(p, n) for p, n in requests]
    sync(device)
    start = time.perf_counter()
    engine.run()
    sync(device)
    seconds = time.perf_counter() - start
    return (
        seconds,
        [r.finished - start for r in submitted],
        [r.output for r in submitted],
    )


def static_run(model, requests, slots: int) -> tuple[float, list[float], list]:
    sync(device_of(model))
    start, latency, outputs = time.perf_counter(), [], []
    for i in range(0, len(requests), slots):
        batch = requests[i : i + slots]
        out = generate(
            model, [p for p, _ in batch], max(n for _, n in batch), temperature=0
        )
        done = time.perf_counter() - start
        latency += [done] * len(batch)
        outputs += [row[:n] for row, (_, n) in zip(out, batch)]
    return time.perf_counter() - start, latency, outputs


def batching_table(model, requests, repeats: int) -> None:
    """The engine against static batches at 1-16 slots; on a GPU also the engine with
    CUDA graphs (each engine is reused across repeats, so graphs are recorded once)."""
    useful = sum(n for _, n in requests)
    graphs = device_of(model) == "cuda"
    print(
        "| slots | engine tok/s | static tok/s | ratio | engine mean latency (s) | "
        "static mean latency (s) | same tokens |"
        + (" engine + CUDA graphs tok/s | its ratio | same tokens |" if graphs else "")
        + "\n|---|---|---|---|---|---|---|"
        + ("---|---|---|" if graphs else "")
    )
    engine_run(requests, Engine(model, slots=4))  # warm-up
    for slots in (1, 2, 4, 8, 16):
        engines = {"engine": Engine(model, slots=slots)}
        if graphs:
            engines["graphs"] = Engine(model, slots=slots, cuda_graphs=True)
            engine_run(requests, engines["graphs"])  # records its graphs
        runs = {"static": [], **{name: [] for name in engines}}
        for _ in range(repeats):  # interleaved, so machine noise hits all
            for name, engine in engines.items():
                runs[name].append(engine_run(requests, engine))
            runs["static"].append(static_run(model, requests, slots))
        seconds = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
        latency = {k: statistics.mean(v[-1][1]) for k, v in runs.items()}
        same = runs["engine"][-1][2] == runs["static"][-1][2]
        row = (
            f"| {slots} | {useful / seconds['engine']:,.0f} | "
            f"{useful / seconds['static']:,.0f} | "
            f"{seconds['static'] / seconds['engine']:.2f} | {latency['engine']:.3f} | "
            f"{latency['static']:.3f} | {same} |"
        )
        if graphs:
            row += (
                f" {useful / seconds['graphs']:,.0f} | "
                f"{seconds['static'] / seconds['graphs']:.2f} | "
                f"{runs['graphs'][-1][2] == runs['static'][-1][2]} |"
            )
        print(row)


def speculative_table(model, draft, requests, repeats: int, new: int) -> None:
    device = device_of(model)
    target_hf = hf_twin(model).eval().to(device)
    draft_hf = hf_twin(draft).eval().to(device)
    prompts = [p for p, _ in requests[:4]]
    new = min(new, model.config.max_seq_len - max(map(len, prompts)))

    def plain() -> list:
        return [generate(model, p, new, temperature=0)[0] for p in prompts]

    def hf(assistant=None, lookahead: int = 4) -> list:
        extra = {}
        if assistant is not None:
            assistant.generation_config.num_assistant_tokens = lookahead
            assistant.generation_config.num_assistant_tokens_schedule = "constant"
            extra = {"assistant_model": assistant}
        with torch.no_grad():
            return [
                target_hf.generate(
                    torch.tensor([p], device=device),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    pad_token_id=0,
                    use_cache=True,  # hf_twin turns it off, for training
                    **extra,
                )[0, len(p) :].tolist()
                for p in prompts
            ]

    greedy, ours_plain = timed(plain, repeats, device)
    _, hf_plain = timed(hf, repeats, device)
    print(
        f"\n{len(prompts)} prompts x {new} new tokens, greedy: "
        f"ours {ours_plain:.3f} s, "
        f"transformers {hf_plain:.3f} s\n"
        "| lookahead | acceptance | tokens per target pass | ours speed-up | "
        "transformers assisted speed-up | same tokens (ours, transformers) |\n"
        "|---|---|---|---|---|---|"
    )
    for lookahead in (1, 2, 4, 6):
        results, seconds = timed(
            lambda: [
                speculative_generate(model, draft, p, new, lookahead) for p in prompts
            ],
            repeats,
            device,
        )
        assisted, hf_seconds = timed(lambda: hf(draft_hf, lookahead), repeats, device)
        drafted = sum(s.drafted for _, s in results)
        accepted = sum(s.accepted for _, s in results)
        calls = sum(s.target_calls for _, s in results)
        print(
            f"| {lookahead} | {accepted / drafted:.0%} | "
            f"{sum(s.tokens for _, s in results) / calls:.2f} | "
            f"{ours_plain / seconds:.2f}x | {hf_plain / hf_seconds:.2f}x | "
            f"{[o for o, _ in results] == greedy}, {assisted == greedy} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ci")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new", type=int, default=96)
    parser.add_argument("--tables", default="batching,speculative")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    info = detect(args.device)  # a clear error where there is no such device
    import transformers

    preset = get_preset(args.preset)
    model = ensure_pretrained(preset).model.eval().to(args.device)
    draft = ensure_draft(preset).model.eval().to(args.device)
    print(
        f"{info} | {torch.get_num_threads()} threads | "
        f"torch {torch.__version__} | transformers {transformers.__version__} | "
        f"preset {preset.name}: model {model.num_params():,} parameters, "
        f"draft {draft.num_params():,}"
    )
    requests = make_requests(preset, args.requests)
    print(
        f"{len(requests)} requests, prompts {min(len(p) for p, _ in requests)}-"
        f"{max(len(p) for p, _ in requests)} tokens, answers "
        f"{min(n for _, n in requests)}-{max(n for _, n in requests)} tokens, greedy\n"
    )
    if "batching" in args.tables:
        with torch.no_grad():
            batching_table(model, requests, args.repeats)
    if "speculative" in args.tables:
        distilled, history = ensure_distilled_draft(preset)
        distilled = distilled.eval().to(args.device)
        print(
            f"\ndistilled draft (pipeline.ensure_distilled_draft): loss "
            f"{history[0]['loss']:.2f} -> {history[-1]['loss']:.2f} in "
            f"{len(history)} steps on the model's greedy continuations"
        )
        for name, candidate in (("draft", draft), ("distilled draft", distilled)):
            print(f"\n### {name}")
            with torch.no_grad():
                speculative_table(model, candidate, requests, args.repeats, args.new)


if __name__ == "__main__":
    main()
