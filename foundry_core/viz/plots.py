"""Tables, source listings and figures for the chapters (see the package docstring)."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..hardware import GIB, HardwareInfo, choose_precision
from ..memory.estimate import MemoryEstimate
from ..presets import HEADROOM, USABLE_FRACTION, Preset, select_preset

MEMORY_PARTS = tuple(MemoryEstimate.__dataclass_fields__)


class MarkdownText(str):
    """A string that Jupyter (and the book) display as rendered Markdown when it ends a cell."""

    def _repr_markdown_(self) -> str:
        return str(self)


def markdown_table(rows: Sequence[dict[str, object]]) -> MarkdownText:
    """A list of same-keyed dicts as a Markdown table (rendered by Jupyter and by the book).

    A "|" inside a cell (ChatML's <|im_end|>) is escaped, so it cannot split the cell in two.
    """
    if not rows:
        return MarkdownText("")
    header = list(rows[0])

    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header)] + [
        line(row[k] for k in header) for row in rows
    ]
    return MarkdownText("\n".join(lines))


def _stacked_shares(
    rows: Sequence[tuple[str, dict[str, float], str]], xlabel: str, title: str
):
    """One horizontal bar per row, split into percentage shares; `rows` are (label, shares, note)."""
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
    """Stacked bars: each preset's estimated training memory as a share of its machine's usable memory."""
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


def preset_choice_rows(
    machines: Iterable[HardwareInfo], env: dict[str, str] | None = None
) -> list[dict[str, object]]:
    """For each machine: the preset the picker chooses and what that means for the run."""
    rows = []
    for machine in machines:
        choice = select_preset(machine, env={} if env is None else env)
        preset, summary = choice.preset, choice.preset.summary()
        rows.append(
            {
                "machine": str(machine),
                "preset": preset.name,
                "precision": choose_precision(machine, preset.train.dtype).dtype,
                "params (M)": summary["params (M)"],
                "batch x seq x accum": summary["batch x seq x accum"],
                "est. memory (GiB)": round(
                    preset.estimate_memory(machine).total / GIB, 2
                ),
                "est. time on its target": summary["est. time"],
            }
        )
    return rows


def show_source(obj: object):
    """The source code of a foundry_core function or class, syntax-highlighted in the notebook."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def plot_rope(head_dim: int = 64, base: float = 10000.0, positions: int = 32):
    """Left: cos of the rotation angle of a few dimension pairs along the positions: each pair is a clock
    hand turning at its own speed. Right: rope(q, m) . rope(k, n) for all m, n: constant along the
    diagonals, i.e. a function of m - n only."""
    import matplotlib.pyplot as plt
    import torch

    from ..model import apply_rope, rope_tables

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
    """A grid of attention heatmaps, one per (layer, head): row = query token, column = key token."""
    import matplotlib.pyplot as plt

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
    """KV-cache memory of `config` at each valid number of KV heads, from MHA down to MQA."""
    import dataclasses

    import matplotlib.pyplot as plt

    from ..model import kv_cache_bytes

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
        f"KV cache: {config.n_layers} layers, {config.n_heads} query heads, {seq_len} tokens, batch {batch_size}"
    )
    fig.tight_layout()
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


def plot_corpus_stats(documents: Sequence, title: str = "corpus"):
    """Left: words per document, largest first. Right: histogram of non-empty line lengths."""
    import matplotlib.pyplot as plt

    words = sorted((len(d.text.split()), d.title) for d in documents)[::-1]
    line_lengths = [
        len(line) for d in documents for line in d.text.split("\n") if line.strip()
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.bar(range(len(words)), [w for w, _ in words], color="tab:blue")
    left.set_xlabel("documents, largest first")
    left.set_ylabel("words")
    left.set_title(f"{title}: {len(documents)} documents")
    right.hist(line_lengths, bins=60, color="tab:orange")
    right.set_xlabel("characters per line")
    right.set_ylabel("lines")
    right.set_title(f"{len(line_lengths):,} non-empty lines")
    fig.tight_layout()
    return fig


def plot_jaccard_estimates(
    true: Sequence[float], estimated: Sequence[float], threshold: float | None = None
):
    """MinHash's estimated Jaccard similarity against the exact value, one dot per pair of documents."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(true, estimated, s=10, alpha=0.6)
    top = max(max(true, default=0), max(estimated, default=0)) * 1.1 or 1
    ax.plot([0, top], [0, top], color="gray", lw=1, label="estimate = truth")
    if threshold is not None:
        ax.axhline(
            threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold}"
        )
    ax.set_xlabel("exact Jaccard of the shingle sets")
    ax.set_ylabel("MinHash estimate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


TOKEN_COLORS = ("#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f9f1")


def tokens_html(pieces: Sequence[str]) -> str:
    """Text cut into tokens, each on its own coloured background; spaces shown as '·', newlines as '⏎'."""
    import html

    spans = []
    for i, piece in enumerate(pieces):
        shown = html.escape(piece).replace(" ", "·").replace("\n", "⏎<br>")
        spans.append(
            f'<span style="background:{TOKEN_COLORS[i % len(TOKEN_COLORS)]};padding:1px 0;'
            f'font-family:monospace">{shown}</span>'
        )
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>"


def plot_bpe_progress(text: str, model):
    """Tokens needed for `text` after each merge of a teaching BPE model: every merge saves some."""
    import matplotlib.pyplot as plt

    from ..tokenizer import BPEModel

    counts = [
        len(BPEModel(model.merges[:n]).encode(text))
        for n in range(len(model.merges) + 1)
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(counts)), counts, marker="o", ms=3)
    ax.set_xlabel("merges learned")
    ax.set_ylabel("tokens for the text")
    ax.set_title(f"{len(text.encode('utf-8'))} bytes of text")
    fig.tight_layout()
    return fig


def plot_compression(vocab_sizes: Sequence[int], bytes_per_token: Sequence[float]):
    """Average bytes of text per token against vocabulary size (log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(vocab_sizes, bytes_per_token, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes per token (validation text)")
    ax.set_title("A larger vocabulary compresses more")
    fig.tight_layout()
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
    """Training curves: each metric per step (line) and its validation value where measured (dots).

    `runs` is one history (a Trainer's list of records) or several, {label: history}; `metrics` maps a
    record key to its label (default: the loss), e.g. {"chosen_reward": "chosen"}, and its validation
    twin is read from "val_<key>". `baselines` draws reference levels, {label: value}. Every chapter
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
    """A Trainer callback that redraws the loss curve in the notebook every `every` steps."""

    def __init__(self, every: int = 10, baselines: Mapping[str, float] | None = None):
        self.every, self.baselines, self.handle = every, baselines, None

    def __call__(self, trainer, record: dict) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        if record["step"] % self.every and record["step"] != trainer.config.max_steps:
            return
        fig = plot_curves(trainer.history, baselines=self.baselines)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def plot_next_token(panels: dict[str, "object"], labels: Sequence[str], top: int = 12):
    """Bar charts of next-token distributions (one per panel title), over the `top` tokens of the first."""
    import matplotlib.pyplot as plt

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
