"""Figures of the model (chapter 3) and of what it predicts (chapter 5).

RoPE's rotations, attention maps, KV-cache sizes, activation functions and next-token
distributions: each figure draws one part of model.py, so it is kept beside the others.
"""

from __future__ import annotations

from typing import Sequence

from .fonts import use_cjk_fallback


def plot_rope(head_dim: int = 64, base: float = 10000.0, positions: int = 32):
    """RoPE's rotations, and why attention then sees only distances.

    Left: cos of the rotation angle of a few dimension pairs along the positions; each
    pair is a clock hand turning at its own speed. Right: rope(q, m) . rope(k, n) for
    all m, n: constant along the diagonals, i.e. a function of m - n only.
    """
    import matplotlib.pyplot as plt
    import torch

    from ..layers import apply_rope, rope_tables

    cos, sin = rope_tables(head_dim, positions, base)
    half = head_dim // 2
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for pair in sorted({0, 1, 2, half // 4, half // 2, half - 1}):
        left.plot(range(positions), cos[:, pair], label=f"pair {pair}")
    left.set_xlabel("position")
    left.set_ylabel("cos(angle)")
    left.set_title("rotation of dimension pairs: fast to slow")
    left.legend(fontsize=7, loc="lower left")
    generator = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(head_dim, generator=generator),
        torch.randn(head_dim, generator=generator),
    )
    rotated_q = apply_rope(q.expand(positions, head_dim), cos, sin)
    rotated_k = apply_rope(k.expand(positions, head_dim), cos, sin)
    image = right.imshow(rotated_q @ rotated_k.T, cmap="viridis")
    right.set_xlabel("key position n")
    right.set_ylabel("query position m")
    right.set_title("score q·k after RoPE: depends on m - n")
    fig.colorbar(image, ax=right, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_attention(
    maps: Sequence,
    tokens: Sequence[str],
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    batch_index: int = 0,
):
    """A grid of attention heatmaps, one per (layer, head).

    Rows are query tokens, columns key tokens.
    """
    import matplotlib.pyplot as plt

    use_cjk_fallback()  # the Chinese track's tokens
    layers = list(range(len(maps))) if layers is None else list(layers)
    heads = list(range(maps[0].shape[1])) if heads is None else list(heads)
    fig, axes = plt.subplots(
        len(layers),
        len(heads),
        figsize=(2.6 * len(heads), 2.6 * len(layers)),
        squeeze=False,
    )
    labels = [t if len(t) <= 6 else t[:5] + "…" for t in tokens]
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(
                maps[layer][batch_index, head].float().numpy(), cmap="Blues", vmin=0
            )
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if len(labels) <= 24 and c == 0:
                ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.tight_layout()
    return fig


def plot_kv_cache(config, seq_len: int, batch_size: int = 1, bytes_per_value: int = 2):
    """KV-cache memory of `config` at every valid number of KV heads: MHA to MQA."""
    import dataclasses

    import matplotlib.pyplot as plt

    from ..kv_cache import kv_cache_bytes

    options = [k for k in range(config.n_heads, 0, -1) if config.n_heads % k == 0]
    sizes = [
        kv_cache_bytes(
            dataclasses.replace(config, n_kv_heads=k),
            batch_size,
            seq_len,
            bytes_per_value,
        )
        / 2**20
        for k in options
    ]
    names = [
        "MHA" if k == config.n_heads else "MQA" if k == 1 else "GQA" for k in options
    ]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(
        [f"{k}\n{n}" for k, n in zip(options, names)], sizes, color="tab:purple"
    )
    ax.bar_label(bars, [f"{s:.0f}" for s in sizes], fontsize=8)
    ax.set_xlabel("KV heads")
    ax.set_ylabel("MiB")
    ax.set_title(
        f"KV cache: {config.n_layers} layers, {config.n_heads} query heads, "
        f"{seq_len} tokens, batch {batch_size}"
    )
    fig.tight_layout()
    return fig


def plot_activation_functions():
    """ReLU, GELU and SiLU (the 'Swish' in SwiGLU) side by side."""
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F

    x = torch.linspace(-4, 4, 200)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, fn in (
        ("ReLU", F.relu),
        ("GELU", F.gelu),
        ("SiLU = x·sigmoid(x)", F.silu),
    ):
        ax.plot(x, fn(x), label=name)
    ax.axhline(0, color="gray", lw=0.5)
    ax.legend()
    ax.set_title("Activation functions")
    fig.tight_layout()
    return fig


def plot_next_token(panels: dict[str, "object"], labels: Sequence[str], top: int = 12):
    """Bar charts of next-token distributions, one per panel title.

    Every panel shows the same tokens: the `top` most likely under the first panel.
    """
    import matplotlib.pyplot as plt

    use_cjk_fallback()  # the Chinese track's tokens
    names = list(panels)
    order = panels[names[0]][0].argsort(descending=True)[:top].tolist()
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3.4), sharey=True
    )
    for ax, name in zip(axes, names):
        probs = panels[name][0]
        ax.bar(range(top), [probs[i].item() for i in order], color="tab:blue")
        ax.set_xticks(
            range(top), [repr(labels[i])[1:-1] for i in order], rotation=90, fontsize=7
        )
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("probability")
    fig.tight_layout()
    return fig
