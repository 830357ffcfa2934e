"""Wall-clock time of each data pipeline stage and of MinHash dedup as the corpus grows.

    python benchmarks/bench_data.py [--vocab-size 4096] [--scales 1,2,4]
                                    [--perturb 0.03] [--skip-pipeline] [--skip-scaling]

Part 1 runs the stages of `foundry_core.pipeline.ensure_corpus` / `ensure_tokenizer` /
`ensure_tokens` on the default corpus (Shakespeare, modern spelling, read from the
cached archive) in a temporary folder, timing each one. Part 2 times `near_duplicates`
on 1x, 2x, 4x the cleaned corpus: the extra copies have a few % of their words replaced
(seeded), so they are near-duplicates that must be found, not cache hits. Exact hashing
(`exact_dedup`) of the same texts is the reference for scale. Offline: the archive is
read from ~/.cache/llm-foundry (`foundry_core.data.sources.fetch`).
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import sentencepiece

from foundry_core import detect
from foundry_core.data import (
    clean_documents,
    exact_dedup,
    minhash_dedup,
    near_duplicates,
    split_documents,
    write_tokens,
)
from foundry_core.data.sources import shakespeare
from foundry_core.tokenizer import train_tokenizer

T = TypeVar("T")
_WORD = re.compile(r"[A-Za-z']+")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def megabytes(texts: list[str]) -> float:
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


def print_table(rows: list[dict[str, object]]) -> None:
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows:
        print(
            "| "
            + " | ".join(
                f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()
            )
            + " |"
        )


def bench_pipeline(vocab_size: int) -> None:
    """Each stage as the pipeline runs it (DataSettings defaults: k=5, threshold 0.5,
    val 10%, seed 0)."""
    rows: list[dict[str, object]] = []

    def stage(
        name: str,
        texts: list[str] | None,
        fn: Callable[[], T],
        describe: Callable[[T], str],
    ) -> T:
        """Time fn(); `texts` is the stage's input (None: measure its output documents
        instead)."""
        result, seconds = timed(fn)
        mb = megabytes(texts if texts is not None else [d.text for d in result])
        rows.append(
            {
                "stage": name,
                "MB": mb,
                "seconds": seconds,
                "MB/s": mb / seconds,
                "result": describe(result),
            }
        )
        return result

    docs = stage("load (cached archive)", None, shakespeare, lambda d: f"{len(d)} docs")
    docs, _ = stage(
        "clean",
        [d.text for d in docs],
        lambda: clean_documents(docs),
        lambda r: (
            f"{len(r[0])} docs kept, {sum(r[1].lines_removed.values())} lines removed"
        ),
    )
    texts = [d.text for d in docs]
    keep, _ = stage(
        "exact dedup",
        texts,
        lambda: exact_dedup(texts),
        lambda r: f"{len(r[1])} duplicate groups",
    )
    docs = [docs[i] for i in keep]
    texts = [d.text for d in docs]
    keep, _ = stage(
        "near dedup (MinHash)",
        texts,
        lambda: minhash_dedup(texts, k=5, threshold=0.5),
        lambda r: f"{len(r[1].pairs)} pairs from {r[1].num_candidates} candidates",
    )
    docs = [docs[i] for i in keep]
    train, val = stage(
        "split",
        [d.text for d in docs],
        lambda: split_documents(docs, 0.1, 0),
        lambda r: f"{len(r[0])} train / {len(r[1])} val docs",
    )
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tokenizer = stage(
            f"train tokenizer (vocab {vocab_size})",
            [d.text for d in train],
            lambda: train_tokenizer([d.text for d in train], vocab_size, tmp),
            lambda t: f"{len(t)} pieces",
        )

        def tokenize() -> int:
            return sum(
                write_tokens(
                    split,
                    tokenizer.encode,
                    Path(tmp) / f"{name}.bin",
                    len(tokenizer),
                    tokenizer.eos_id,
                )
                for name, split in (("train", train), ("val", val))
            )

        tokens = stage(
            "tokenize + write",
            [d.text for d in train + val],
            tokenize,
            lambda n: f"{n:,} tokens",
        )
    tokenize_s = rows[-1]["seconds"]
    total = sum(r["seconds"] for r in rows)
    rows.append(
        {
            "stage": "**total**",
            "MB": rows[0]["MB"],
            "seconds": total,
            "MB/s": rows[0]["MB"] / total,
            "result": f"{tokens / total:,.0f} tokens/s end to end",
        }
    )
    rows = [{**r, "% of total": 100 * r["seconds"] / total} for r in rows]
    print(
        f"\n### Pipeline on Shakespeare: {len(train) + len(val)} documents kept, "
        f"{sum(len(d.text) for d in train + val):,} characters, "
        f"{tokens:,} tokens written "
        f"({tokens / tokenize_s:,.0f} tokens/s to tokenize + write)\n"
    )
    print_table(rows)


def perturb(text: str, seed: int, rate: float) -> str:
    """Replace each word with probability `rate` by another word of the same text
    (seeded, deterministic)."""
    rng = random.Random(seed)
    vocabulary = sorted(set(_WORD.findall(text)))
    return _WORD.sub(
        lambda m: rng.choice(vocabulary) if rng.random() < rate else m.group(0), text
    )


def bench_scaling(scales: list[int], rate: float) -> None:
    """near_duplicates and exact_dedup on the cleaned corpus plus (scale - 1) perturbed
    copies of it."""
    base = [d.text for d in clean_documents(shakespeare())[0]]
    rows: list[dict[str, object]] = []
    for scale in scales:
        texts = base + [
            perturb(t, seed=copy * 100_003 + i, rate=rate)
            for copy in range(1, scale)
            for i, t in enumerate(base)
        ]
        words = sum(len(t.split()) for t in texts)
        near, near_s = timed(
            lambda: near_duplicates(
                texts, k=5, num_perm=128, bands=32, rows=4, threshold=0.5
            )
        )
        (_, groups), exact_s = timed(lambda: exact_dedup(texts))
        rows.append(
            {
                "scale": f"{scale}x",
                "documents": len(texts),
                "words (M)": words / 1e6,
                "MB": megabytes(texts),
                "near dedup s": near_s,
                "s / M words": near_s / (words / 1e6),
                "candidates": near.num_candidates,
                "near pairs": len(near.pairs),
                "exact dedup s": exact_s,
                "exact groups": len(groups),
                "near / exact": near_s / exact_s,
            }
        )
    print(
        "\n### MinHash dedup vs corpus size (k=5, 128 permutations, "
        "32 bands x 4 rows, threshold 0.5; "
        f"copies with {100 * rate:g}% of words replaced)\n"
    )
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument(
        "--scales",
        default="1,2,4",
        help="corpus sizes for the dedup scaling, comma-separated",
    )
    parser.add_argument(
        "--perturb",
        type=float,
        default=0.03,
        help="share of words replaced in each copy",
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    info = detect("cpu")
    print(
        f"{info} | {info.cpu_cores} cores | Python {platform.python_version()} | "
        f"numpy {np.__version__} | sentencepiece {sentencepiece.__version__}"
    )
    if not args.skip_pipeline:
        bench_pipeline(args.vocab_size)
    if not args.skip_scaling:
        bench_scaling([int(s) for s in args.scales.split(",")], args.perturb)


if __name__ == "__main__":
    main()
