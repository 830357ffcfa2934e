"""What the chapters show: figures, tables and widgets. The core library never imports this package;
matplotlib and ipywidgets are imported inside the functions, so `foundry_core` stays importable (and
fast to import) in scripts and on headless machines.

- `viz` (plots.py): tables, source listings and the figures of chapters 0-5, and `plot_curves`, the
  training-curve plot every chapter uses;
- `viz.align`: chapters 6-8 (loss masks, accuracies, margins, beta);
- `viz.quant`: chapter 10 (quantization grids and errors);
- `viz.widgets`: the interactive explorers.
"""

from .plots import (
    MEMORY_PARTS,
    TOKEN_COLORS,
    LiveLoss,
    MarkdownText,
    markdown_table,
    plot_activation_functions,
    plot_attention,
    plot_bpe_progress,
    plot_compression,
    plot_corpus_stats,
    plot_curves,
    plot_jaccard_estimates,
    plot_kv_cache,
    plot_lr_schedule,
    plot_memory_estimates,
    plot_next_token,
    plot_param_breakdown,
    plot_rope,
    preset_choice_rows,
    show_source,
    tokens_html,
)

__all__ = [
    "LiveLoss",
    "MEMORY_PARTS",
    "MarkdownText",
    "TOKEN_COLORS",
    "markdown_table",
    "plot_activation_functions",
    "plot_attention",
    "plot_bpe_progress",
    "plot_compression",
    "plot_corpus_stats",
    "plot_curves",
    "plot_jaccard_estimates",
    "plot_kv_cache",
    "plot_lr_schedule",
    "plot_memory_estimates",
    "plot_next_token",
    "plot_param_breakdown",
    "plot_rope",
    "preset_choice_rows",
    "show_source",
    "tokens_html",
]
