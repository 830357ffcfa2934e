"""Figures of chapter 11: the quantization grid, the rounding errors, and size against
quality and speed."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from ..quantize import (
    dequantize_int4,
    dequantize_int8,
    quantize_tensor_int4,
    quantize_tensor_int8,
)


def plot_quantization_grid(row: torch.Tensor, group_size: int = 32, groups: int = 2):
    """The first `groups` groups of one weight row: the float values, where int8 and
    int4 put them, and the 16 levels each int4 group may use (its own scale and zero
    point give each group its own ladder)."""
    w = row.detach().float()[None, : group_size * groups]
    int8 = dequantize_int8(*quantize_tensor_int8(w))[0]
    packed, scales, zeros = quantize_tensor_int4(w, group_size)
    int4 = dequantize_int4(packed, scales, zeros, w.shape[1])[0]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for g in range(groups):
        start, stop = g * group_size - 0.5, (g + 1) * group_size - 0.5
        levels = (torch.arange(16) - zeros[0, g].float()) * scales[0, g]
        ax.hlines(
            levels,
            start,
            stop,
            color="C1",
            lw=0.5,
            alpha=0.5,
            label="int4 levels" if g == 0 else None,
        )
        if g:
            ax.axvline(start, color="gray", ls=":", lw=1)
    x = torch.arange(w.shape[1])
    ax.plot(x, w[0], "o", ms=5, color="k", label="float weight")
    ax.plot(x, int8, "x", ms=6, color="C0", label="int8 (one scale per row)")
    ax.plot(x, int4, "_", ms=12, mew=2, color="C1", label=f"int4 (group {group_size})")
    ax.set_xlabel("position in the row (dotted line: a new group starts)")
    ax.set_ylabel("weight value")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def plot_error_histograms(errors: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """For each scheme, the histogram of (rounding error / step size) over every
    weight: flat between -0.5 and +0.5 if rounding behaves, as it should for weights
    spread over many steps."""
    fig, axes = plt.subplots(
        1, len(errors), figsize=(3.6 * len(errors), 3), sharey=True, squeeze=False
    )
    for ax, (label, (error, step)) in zip(axes[0], errors.items()):
        ax.hist(
            (error / step).flatten().numpy(), bins=41, range=(-0.6, 0.6), color="C0"
        )
        for edge in (-0.5, 0.5):
            ax.axvline(edge, color="C3", ls="--", lw=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("error / step")
    axes[0][0].set_ylabel("weights")
    fig.tight_layout()
    return fig


def plot_layer_errors(errors: dict[str, dict[str, float]]):
    """Relative error ||W_q - W|| / ||W|| of every quantized layer, one bar per scheme
    (log scale)."""
    layers = list(next(iter(errors.values())))
    width = 0.8 / len(errors)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * len(layers)), 3.6))
    for i, (label, by_layer) in enumerate(errors.items()):
        ax.bar(
            [k + (i - (len(errors) - 1) / 2) * width for k in range(len(layers))],
            [by_layer[name] for name in layers],
            width,
            label=label,
        )
    ax.set_xticks(
        range(len(layers)), [_short(name) for name in layers], rotation=90, fontsize=7
    )
    ax.set_yscale("log")
    ax.set_ylabel("relative error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_size_quality_speed(rows: Sequence[dict]):
    """Left: model size against perplexity (down and left is better). Right: decoding
    time per token."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, row in enumerate(rows):
        left.scatter(row["model MB"], row["perplexity"], color=f"C{i}", s=40)
        left.annotate(
            row["variant"],
            (row["model MB"], row["perplexity"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    left.set_xlabel("model size (MB)")
    left.set_ylabel("perplexity on held-out text")
    right.barh(
        [r["variant"] for r in rows],
        [r["ms/token"] for r in rows],
        color=[f"C{i}" for i in range(len(rows))],
    )
    right.invert_yaxis()
    right.set_xlabel("ms per generated token (batch 1)")
    fig.tight_layout()
    return fig


def _short(name: str) -> str:
    """layers.3.self_attn.q_proj -> 3.q_proj"""
    parts = name.split(".")
    return f"{parts[1]}.{parts[-1]}" if len(parts) > 2 and parts[1].isdigit() else name
