"""Figures of the data and tokenizer chapters (1 and 2).

The corpus, its near-duplicates and how text becomes tokens: everything that comes
before the model, kept together.
"""

from __future__ import annotations

from typing import Mapping, Sequence


def plot_corpus_stats(documents: Sequence, title: str = "corpus"):
    """Words per document (left, largest first) and non-empty line lengths (right)."""
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
    """MinHash's estimate of Jaccard similarity against the exact value.

    One dot per pair of documents.
    """
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
    """Text cut into tokens, each on its own coloured background.

    Spaces are shown as '·' and newlines as '⏎', so that they can be seen.
    """
    import html

    spans = []
    for i, piece in enumerate(pieces):
        shown = html.escape(piece).replace(" ", "·").replace("\n", "⏎<br>")
        spans.append(
            f'<span style="background:{TOKEN_COLORS[i % len(TOKEN_COLORS)]};'
            f'padding:1px 0;font-family:monospace">{shown}</span>'
        )
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>"


def plot_bpe_progress(text: str, model):
    """Tokens needed for `text` after each merge of a teaching BPE model.

    Every merge saves some.
    """
    import matplotlib.pyplot as plt

    from ..bpe import BPEModel

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


def plot_compression(
    vocab_sizes: Sequence[int],
    bytes_per_token: Sequence[float] | Mapping[str, Sequence[float]],
    ylabel: str = "bytes per token (validation text)",
):
    """Average bytes of text per token against vocabulary size (log scale): one curve,
    or one per label of a mapping (e.g. per language)."""
    import matplotlib.pyplot as plt

    curves = (
        bytes_per_token
        if isinstance(bytes_per_token, Mapping)
        else {"": bytes_per_token}
    )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        ax.plot(vocab_sizes, values, marker="o", label=label or None)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel(ylabel)
    ax.set_title("A larger vocabulary compresses more")
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    return fig
