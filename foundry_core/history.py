"""A training run's history as data, and the progress bar that shows it live.

The Trainer appends one JSON record per step to a file as the run goes, so a plot or a
script reads a run's curves from data (during the run, or after a crash) and never from
printed text.
"""

from __future__ import annotations

import json
from pathlib import Path


def history_file(run_dir: str | Path, rank: int = 0) -> Path:
    """run_dir/history.jsonl for rank 0, history-rank<r>.jsonl for any other rank."""
    return Path(run_dir) / (
        "history.jsonl" if rank == 0 else f"history-rank{rank}.jsonl"
    )


def append_history(path: Path, records: list[dict]) -> None:
    """Add records to the file, one JSON line each, creating its folder if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)


def read_history(run_dir: str | Path, rank: int = 0) -> list[dict]:
    """The per-step records a Trainer wrote into `run_dir`: rank 0's, or `rank`'s."""
    path = history_file(run_dir, rank)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: no Trainer with out_dir={run_dir} (and this rank) ran"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress_bar(
    total: int | None, enabled: bool, desc: str = "training", unit: str = "step", **bar
):
    """A tqdm bar over `total` units (None: unknown), or None when progress is not
    wanted; `bar` passes other tqdm options (initial, unit_scale)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, **bar)
