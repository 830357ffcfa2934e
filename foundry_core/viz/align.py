"""Figures for the post-training chapters (6-8): loss masks, accuracies, LoRA's
matrices and ranks, margins and the beta sweep."""

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


def draw_lora(d_in: int, d_out: int, rank: int, title: str = "LoRA: W x + B A x"):
    """The frozen weight W beside the two trainable factors B (d_out x rank) and
    A (rank x d_in), drawn to scale: the rank is the narrow bottleneck."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(7, 3.2))
    gap = 0.25 * d_in
    b_x, a_x = d_in + gap, d_in + 2 * gap + rank
    boxes = [  # (x, y, width, height, colour)
        (0, 0, d_in, d_out, "#cccccc"),
        (b_x, 0, rank, d_out, "#f4a261"),
        (a_x, d_out - rank, d_in, rank, "#2a9d8f"),
    ]
    for x, y, w, h, colour in boxes:
        ax.add_patch(Rectangle((x, y), w, h, color=colour, ec="black"))
    labels = [  # (x, y, text): B's to its right, A's under it
        (d_in / 2, d_out / 2, f"W (frozen)\n{d_out} x {d_in}"),
        (b_x + rank + 0.05 * d_in, d_out / 2, f"B\n{d_out} x {rank}"),
        (a_x + d_in / 2, d_out - rank - 0.08 * d_out, f"A\n{rank} x {d_in}"),
    ]
    for x, y, text in labels:
        ax.text(x, y, text, ha="left" if text[0] == "B" else "center",
                va="center", fontsize=8)  # fmt: skip
    ax.text(d_in + gap / 2, d_out / 2, "+", ha="center", va="center", fontsize=16)
    trained, frozen = rank * (d_in + d_out), d_in * d_out
    ax.set_title(
        f"{title}\n{trained:,} trained numbers instead of {frozen:,} "
        f"({trained / frozen:.1%})",
        fontsize=10,
    )
    ax.set_xlim(-0.05 * d_in, a_x + 1.05 * d_in)
    ax.set_ylim(-0.15 * d_out, 1.05 * d_out)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_lora_ranks(
    ranks: Sequence[int],
    series: Mapping[str, Sequence[float]],
    full: Mapping[str, float],
    title: str = "what LoRA trains and keeps, by rank",
):
    """One line per quantity against the rank (log-log), each with its full
    fine-tuning value as a dashed line of the same colour."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, values in series.items():
        (line,) = ax.plot(ranks, values, "o-", label=f"LoRA: {label}")
        ax.axhline(full[label], ls="--", color=line.get_color(), label=f"full: {label}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("rank r")
    return _finish(fig, ax, title, legend_size=7)


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
