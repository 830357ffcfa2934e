r"""Run the chapters at several seeds and thread counts and report every assert's pass
rate and margin.

A claim the book makes must hold on every machine: other CPUs, GPUs and Macs compute
floats a little differently, so a small model trains to a slightly different place. This
script replays that spread here: each chapter is executed in a fresh kernel
(allow_errors, so one failing check does not hide the next) under FOUNDRY_SEED=s and
FOUNDRY_THREADS=t, and after every cell that holds an `assert` the script asks the
kernel for the two sides of each top-level comparison. The table printed at the end has
one row per assert: how often it held, and its smallest margin, the slack left as a
fraction of the threshold (for `a < b`: (b - a) / |b|). A margin near 0 is a claim that
a slightly different machine can break.

    # FOUNDRY_FAST chapters, seeds 0-4 x 1 and 2 threads
    python scripts/check_robustness.py
    # the cpu preset, chapters 04-11, seeds 0 and 1, 2 threads
    python scripts/check_robustness.py --preset cpu \
        --chapters 04 05 06 07 08 09 10 11 --seeds 0 1 --threads 2
    # bf16 autocast (CPUs with AVX512-BF16 / AMX)
    python scripts/check_robustness.py --dtype bfloat16

Each run appends to --log (JSON lines), so an interrupted sweep keeps what it measured;
--report only prints the table of an existing log.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# Evaluated in the kernel after an assert cell: the operands of each comparison, as
# numbers when they are numbers. Kept private (leading underscore) and deleted again, so
# the chapter's namespace is untouched.
PROBE = """
def _robustness_probe(checks):
    import json, math
    out = []
    for source, pairs in checks:
        row = {"source": source, "holds": None, "pairs": []}
        try:
            row["holds"] = bool(eval(source, globals()))
        except Exception as err:  # noqa: BLE001
            # a loop variable, or a name that no longer exists
            row["error"] = type(err).__name__
        for left, op, right in pairs:
            try:
                a, b = float(eval(left, globals())), float(eval(right, globals()))
                row["pairs"].append(
                    [a, op, b] if math.isfinite(a) and math.isfinite(b) else None
                )
            except Exception:  # noqa: BLE001  (not a number: a tensor, a string, a set)
                row["pairs"].append(None)
        out.append(row)
    print("@@PROBE@@" + json.dumps(out))
_robustness_probe(%r)
del _robustness_probe
"""


def comparisons(test: ast.expr) -> list[tuple[str, str, str]]:
    """The (left, op, right) sources of every ordering comparison in an assert's test
    (`and` split)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [pair for value in test.values for pair in comparisons(value)]
    if not isinstance(test, ast.Compare):
        return []
    ops = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
    pairs, left = [], test.left
    for op, right in zip(test.ops, test.comparators):
        if type(op) in ops:
            pairs.append((ast.unparse(left), ops[type(op)], ast.unparse(right)))
        left = right
    return pairs


def top_level_asserts(source: str) -> list[tuple[str, list]]:
    """(test source, comparisons) of each assert at the top level of a cell; nested ones
    are skipped."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics
        return []
    return [
        (ast.unparse(node.test), comparisons(node.test))
        for node in tree.body
        if isinstance(node, ast.Assert)
    ]


def margin(a: float, op: str, b: float) -> float:
    """Slack of `a op b` relative to the threshold b (absolute slack when b is 0);
    negative = fails."""
    slack = (b - a) if op in ("<", "<=") else (a - b)
    return slack / abs(b) if b else slack


def run_chapter(path: Path, env: dict[str, str], timeout: int) -> list[dict]:
    """Execute one chapter; one record per assert (or per failing cell that holds no
    top-level assert)."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    records = []
    with client.setup_kernel(env={**os.environ, **env}):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            start = time.perf_counter()
            client.execute_cell(cell, index)
            error = next((o for o in cell.outputs if o.output_type == "error"), None)
            expected = "raises-exception" in cell.metadata.get("tags", [])
            asserts = top_level_asserts(cell.source)
            if "assert" not in cell.source and (error is None or expected):
                continue
            failed = (
                None
                if error is None or expected
                else f"{error.ename}: {error.evalue}"[:200]
            )
            probes = _probe(client, asserts, index) if asserts else []
            base = {
                "chapter": path.stem,
                "cell": index,
                "seconds": round(time.perf_counter() - start, 2),
            }
            for row in probes:
                margins = [margin(*p) for p in row["pairs"] if p is not None]
                if failed and not failed.startswith("AssertionError"):
                    # the cell broke before its checks could mean anything
                    holds = False
                else:
                    holds = row["holds"] if row["holds"] is not None else failed is None
                records.append(
                    {
                        **base,
                        "check": row["source"],
                        "holds": holds,
                        "margin": min(margins) if margins else None,
                        "values": row["pairs"],
                        "error": None if holds else failed or "assertion does not hold",
                    }
                )
            if (
                not probes
                or failed
                and all(r["holds"] for r in records if r["cell"] == index)
            ):
                # a check nested in a loop or function, or an error outside any
                # top-level assert
                records.append(
                    {
                        **base,
                        "check": _first_line(cell.source),
                        "holds": failed is None,
                        "margin": None,
                        "error": failed,
                    }
                )
    return records


def _first_line(source: str) -> str:
    lines = [
        line.strip() for line in source.splitlines() if "assert" in line
    ] or source.splitlines()[:1]
    return lines[0][:100] if lines else ""


def _probe(client, asserts, index) -> list[dict]:
    import nbformat

    probe = nbformat.v4.new_code_cell(PROBE % [[s, p] for s, p in asserts])
    client.execute_cell(probe, index)
    text = "".join(
        o.get("text", "") for o in probe.outputs if o.output_type == "stream"
    )
    found = re.search(r"@@PROBE@@(.*)", text)
    return json.loads(found.group(1)) if found else []


def chapters(selected: list[str] | None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("*.md"))
    if selected:
        paths = [p for p in paths if any(p.stem.startswith(s) for s in selected)]
    return paths


def report(log: Path) -> str:
    """The table: one row per assert, its pass rate over every configuration run and its
    smallest margin."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    configs = sorted({r["config"] for r in rows})
    table: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        table[(r["chapter"], r["cell"], r["check"])].append(r)
    lines = [
        f"configurations: {', '.join(configs)}",
        "",
        "| chapter | cell | check | held | smallest margin | worst values |",
        "|---|---|---|---|---|---|",
    ]
    failing = 0
    for (chapter, cell, check), runs in sorted(table.items()):
        held = sum(r["holds"] for r in runs)
        failing += held < len(runs)
        margins = [r["margin"] for r in runs if r["margin"] is not None]
        worst = min(
            runs,
            key=lambda r: (r["holds"], r["margin"] if r["margin"] is not None else 1e9),
        )
        values = "; ".join(
            f"{a:.4g} {op} {b:.4g}"
            for a, op, b in (p for p in worst.get("values") or [] if p)
        )
        margin_cell = f"{min(margins):+.3g}" if margins else "exact"
        error = f" {worst['error'][:80]}" if worst.get("error") else ""
        escaped = check.replace("|", "\\|")  # a bare | would end the table cell
        lines.append(
            f"| {chapter[:3].rstrip('_')} | {cell} | `{escaped[:90]}` | "
            f"{held}/{len(runs)} | {margin_cell} | "
            f"{values[:80].replace('|', '/')} |{error}"
        )
    lines += [
        "",
        f"{len(table)} checks, {failing} failed in at least one configuration",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--preset", default=None, help="run at this preset instead of FOUNDRY_FAST=1"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="FOUNDRY_DTYPE for every training run, e.g. bfloat16",
    )
    parser.add_argument(
        "--chapters", nargs="*", help="chapter prefixes, e.g. 04 08 A1 (default: all)"
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="per-cell seconds (default 300, 7200 with --preset)",
    )
    parser.add_argument(
        "--log", type=Path, default=ROOT / "_build" / "robustness.jsonl"
    )
    parser.add_argument(
        "--report", action="store_true", help="only print the table of --log"
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=ROOT / "_build" / "robustness-artifacts",
        help="each configuration trains its own models in a subfolder of this (a model "
        "cached by another thread count would hide that configuration's trajectory)",
    )
    args = parser.parse_args()
    if not args.report:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        mode = {"FOUNDRY_PRESET": args.preset} if args.preset else {"FOUNDRY_FAST": "1"}
        timeout = args.timeout or (7200 if args.preset else 300)
        for seed in args.seeds:
            for threads in args.threads:
                env = {
                    **mode,
                    "FOUNDRY_SEED": str(seed),
                    "FOUNDRY_THREADS": str(threads),
                    "FOUNDRY_OFFLINE": "1",
                }
                if args.dtype:
                    env["FOUNDRY_DTYPE"] = args.dtype
                config = f"{args.preset or 'fast'} seed={seed} threads={threads}" + (
                    f" {args.dtype}" if args.dtype else ""
                )
                env["FOUNDRY_ARTIFACTS"] = str(
                    args.artifacts / config.replace(" ", "_").replace("=", "-")
                )
                for path in chapters(args.chapters):
                    start = time.perf_counter()
                    records = run_chapter(path, env, timeout)
                    with args.log.open("a") as log:
                        for record in records:
                            log.write(json.dumps({**record, "config": config}) + "\n")
                    bad = [r for r in records if not r["holds"]]
                    print(
                        f"{config} {path.stem}: {len(records)} checks, "
                        f"{len(bad)} failed, "
                        f"{time.perf_counter() - start:.0f} s",
                        flush=True,
                    )
                    for r in bad:
                        print(
                            f"    cell {r['cell']}: {r['check'][:80]} -> "
                            f"{r['error'] or r.get('values')}",
                            flush=True,
                        )
    print(report(args.log))


if __name__ == "__main__":
    main()
