"""Figures and tables for the chapters. matplotlib is imported inside each function, so the core
library stays importable (and fast to import) in scripts and on headless machines."""

from __future__ import annotations

from typing import Iterable, Sequence

from .hardware import GIB, HardwareInfo, choose_precision
from .presets import HEADROOM, USABLE_FRACTION, Preset, select_preset

MEMORY_PARTS = ("weights", "gradients", "optimizer", "autocast_copies", "activations", "runtime")


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    """A list of same-keyed dicts as a Markdown table (rendered by Jupyter and by the book)."""
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines)


def plot_memory_estimates(presets: Iterable[Preset]):
    """Stacked bars: each preset's estimated training memory as a share of its machine's usable memory."""
    import matplotlib.pyplot as plt

    presets = list(presets)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(presets) + 2))
    colors = plt.get_cmap("tab10").colors
    for row, preset in enumerate(presets):
        estimate = preset.estimate_memory()
        usable = preset.memory_gib * GIB * USABLE_FRACTION[preset.device]
        left = 0.0
        for i, part in enumerate(MEMORY_PARTS):
            share = 100 * getattr(estimate, part) / usable
            ax.barh(row, share, left=left, color=colors[i], label=part.replace("_", " ") if row == 0 else None)
            left += share
        ax.text(left + 1, row, f"{estimate.total / GIB:.2f} of {usable / GIB:.0f} GiB", va="center", fontsize=8)
    ax.axvline(100 * (1 - HEADROOM), color="black", ls="--", lw=1, label=f"limit: {HEADROOM:.0%} headroom")
    ax.set_yticks(range(len(presets)), [f"{p.name} ({p.memory_gib:g} GB)" for p in presets])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of the target machine's usable memory")
    ax.set_title("Estimated peak training memory per preset")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def preset_choice_rows(machines: Iterable[HardwareInfo], env: dict[str, str] | None = None) -> list[dict[str, object]]:
    """For each machine: the preset the picker chooses and what that means for the run."""
    rows = []
    for machine in machines:
        choice = select_preset(machine, env={} if env is None else env)
        preset, summary = choice.preset, choice.preset.summary()
        rows.append({
            "machine": str(machine),
            "preset": preset.name,
            "precision": choose_precision(machine, preset.train.dtype).dtype,
            "params (M)": summary["params (M)"],
            "batch x seq x accum": summary["batch x seq x accum"],
            "est. memory (GiB)": round(preset.estimate_memory(machine).total / GIB, 2),
            "est. time on its target": summary["est. time"],
        })
    return rows


def show_source(obj: object):
    """The source code of a foundry_core function or class, syntax-highlighted in the notebook."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
