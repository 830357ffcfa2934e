"""Figures for the post-training chapters (6-8): loss masks, accuracies, margins and the
beta sweep."""

from __future__ import annotations

from typing import Mapping, Sequence


def _finish(fig, ax, title: str, legend_size: int = 8):
    """The common last touches: title, legend, tight layout."""
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    return fig


def loss_mask_html(tokenizer, ids: Sequence[int], trained: Sequence[bool]) -> str:
    """Every token of a chat; the ones the loss is computed on in bold on green, the
    others grey."""
    import html

    spans = []
    for token, keep in zip(ids, trained):
        piece = (
            tokenizer.id_to_piece(token)
            if token in tokenizer.special_token_ids().values()
            else tokenizer.decode([token])
        )
        shown = html.escape(piece).replace(" ", "·").replace("\n", "⏎<br>")
        style = (
            "background:#b7e4c7;font-weight:bold"
            if keep
            else "background:#eeeeee;color:#777"
        )
        spans.append(
            f'<span style="{style};font-family:monospace;margin-right:1px">'
            f"{shown}</span>"
        )
    legend = (
        '<div style="font-size:85%">'
        "green, bold: trained (loss computed); grey: context only</div>"
    )
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>" + legend


def plot_accuracy(
    results: Mapping[str, Mapping[str, float]], title: str = "held-out accuracy"
):
    """Grouped bars: one group per task, one bar per model (e.g. {"base": {...},
    "SFT": {...}})."""
    import matplotlib.pyplot as plt

    models = list(results)
    tasks = list(next(iter(results.values())))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, model in enumerate(models):
        xs = [t + (i - (len(models) - 1) / 2) * width for t in range(len(tasks))]
        bars = ax.bar(xs, [results[model][task] for task in tasks], width, label=model)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of correct answers")
    return _finish(fig, ax, title)


def plot_margins(
    margins: Mapping[str, Sequence[float]],
    title: str = "reward margin on held-out pairs",
):
    """Histograms of r(chosen) - r(rejected), one per kind of pair; right of 0 is a
    correct ranking."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for kind, values in margins.items():
        ax.hist(list(values), bins=30, alpha=0.55, label=f"{kind} ({len(values)})")
    ax.axvline(0, color="black", lw=1)
    ax.set_xlabel("r(chosen) - r(rejected)")
    ax.set_ylabel("pairs")
    return _finish(fig, ax, title)


def plot_beta_sweep(
    betas: Sequence[float],
    series: Mapping[str, Sequence[float]],
    title: str = "the effect of beta",
):
    """One line per measured quantity against DPO's beta (log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for label, values in series.items():
        ax.plot(betas, values, "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("beta")
    return _finish(fig, ax, title)
