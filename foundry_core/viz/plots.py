"""Figures of what a run costs and how it goes.

Memory and parameters per preset, the learning-rate schedule, and `plot_curves`, the
training-curve plot every chapter uses. The tables and the other chapters' figures live
in tables.py, data_plots.py and model_plots.py.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..hardware import GIB
from ..memory.estimate import MemoryEstimate
from ..presets import HEADROOM, USABLE_FRACTION, Preset

MEMORY_PARTS = tuple(MemoryEstimate.__dataclass_fields__)


def _stacked_shares(
    rows: Sequence[tuple[str, dict[str, float], str]], xlabel: str, title: str
):
    """One horizontal bar per row, split into percentage shares.

    `rows` are (label, shares, note) triples.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 2))
    colors = plt.get_cmap("tab10").colors
    for y, (_, shares, note) in enumerate(rows):
        left = 0.0
        for i, (part, share) in enumerate(shares.items()):
            ax.barh(
                y,
                share,
                left=left,
                color=colors[i],
                label=part.replace("_", " ") if y == 0 else None,
            )
            left += share
        ax.text(left + 1, y, note, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig, ax


def _legend_below(fig, ax) -> None:
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()


def plot_memory_estimates(presets: Iterable[Preset]):
    """Stacked bars: each preset's estimated training memory, part by part.

    Each part is a share of the usable memory of the machine the preset targets.
    """
    rows = []
    for preset in presets:
        estimate = preset.estimate_memory()
        usable = preset.memory_gib * GIB * USABLE_FRACTION[preset.device]
        shares = {part: 100 * getattr(estimate, part) / usable for part in MEMORY_PARTS}
        rows.append(
            (
                f"{preset.name} ({preset.memory_gib:g} GB)",
                shares,
                f"{estimate.total / GIB:.2f} of {usable / GIB:.0f} GiB",
            )
        )
    fig, ax = _stacked_shares(
        rows,
        "% of the target machine's usable memory",
        "Estimated peak training memory per preset",
    )
    ax.axvline(
        100 * (1 - HEADROOM),
        color="black",
        ls="--",
        lw=1,
        label=f"limit: {HEADROOM:.0%} headroom",
    )
    _legend_below(fig, ax)
    return fig


def plot_param_breakdown(presets: Iterable[Preset]):
    """Each preset's parameters split by component, as shares of its total."""
    rows = []
    for preset in presets:
        counts = preset.model.param_counts()
        total = sum(counts.values())
        rows.append(
            (
                preset.name,
                {part: 100 * n / total for part, n in counts.items()},
                f"{total / 1e6:.3g}M",
            )
        )
    fig, ax = _stacked_shares(rows, "% of parameters", "Where the parameters are")
    _legend_below(fig, ax)
    return fig


def plot_lr_schedule(config):
    """The learning rate of every step: linear warmup, then cosine decay to min_lr."""
    import matplotlib.pyplot as plt

    from ..train import lr_at

    steps = range(config.max_steps)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, [lr_at(s, config) for s in steps])
    ax.axvline(config.warmup_steps, color="gray", ls=":", lw=1, label="end of warmup")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(
    runs: Sequence[dict] | Mapping[str, Sequence[dict]],
    metrics: Mapping[str, str] | None = None,
    ylabel: str = "cross-entropy (nats per token)",
    title: str = "",
    *,
    baselines: Mapping[str, float] | None = None,
    validation: bool = True,
    logy: bool = False,
    ax=None,
):
    """Training curves: each metric per step (line), and its validation value (dots).

    `runs` is one history (a Trainer's list of records) or several, {label: history}.
    `metrics` maps a record key to its label (default: the loss), e.g.
    {"chosen_reward": "chosen"}; its validation twin, where measured, is read from
    "val_<key>". `baselines` draws reference levels, {label: value}. Every chapter
    draws its curves with this one function.
    """
    import matplotlib.pyplot as plt

    runs = {"": runs} if not isinstance(runs, Mapping) else runs
    metrics = metrics or {"loss": "loss"}
    fig, ax = plt.subplots(figsize=(7, 3.6)) if ax is None else (ax.figure, ax)
    for i, (run, history) in enumerate(runs.items()):
        for j, (key, name) in enumerate(metrics.items()):
            color = f"C{i * len(metrics) + j}"
            label = ": ".join(
                part
                for part in (run, name if len(metrics) > 1 or not run else "")
                if part
            )
            ax.plot(
                [h["step"] for h in history if key in h],
                [h[key] for h in history if key in h],
                lw=1,
                color=color,
                label=f"{label} (train)" if validation else label,
            )
            held_out = [
                (h["step"], h[f"val_{key}"]) for h in history if f"val_{key}" in h
            ]
            if held_out and validation:
                ax.plot(
                    *zip(*held_out),
                    "o-",
                    ms=4,
                    color=color,
                    label=f"{label} (validation)",
                )
    for k, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color="gray", ls=("--", ":", "-.")[k % 3], lw=1, label=name)
    ax.set_yscale("log" if logy else "linear")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


class LiveLoss:
    """A Trainer callback that redraws the loss curve (or the `metrics` of
    plot_curves) in the notebook as it trains.

    It draws every `every` steps, and at the last step.
    """

    def __init__(
        self,
        every: int = 10,
        baselines: Mapping[str, float] | None = None,
        metrics: Mapping[str, str] | None = None,
        ylabel: str = "cross-entropy (nats per token)",
    ):
        self.every, self.baselines, self.handle = every, baselines, None
        self.metrics, self.ylabel = metrics, ylabel

    def __call__(self, trainer, record: dict) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        if record["step"] % self.every and record["step"] != trainer.config.max_steps:
            return
        fig = plot_curves(
            trainer.history, self.metrics, self.ylabel, baselines=self.baselines
        )
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
