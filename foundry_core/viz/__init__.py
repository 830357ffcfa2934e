"""What the chapters show: figures, tables and widgets. The core library never imports
this package; matplotlib and ipywidgets are imported inside the functions, so
`foundry_core` stays importable (and fast to import) in scripts and on headless
machines.

- `viz`: tables and source listings (tables.py); the figures of chapters 1-2
  (data_plots.py) and 3 and 5 (model_plots.py); memory and parameter bars, the
  learning-rate schedule and `plot_curves`, the training-curve plot every chapter uses
  (plots.py);
- `viz.align`: chapters 6-8 (loss masks, accuracies, margins, beta);
- `viz.rl`: chapter 9 (advantages, the clip, over-optimisation);
- `viz.quant`: chapter 11 (quantization grids and errors);
- `viz.widgets`: the interactive explorers.
"""

from .data_plots import (
    TOKEN_COLORS,
    plot_bpe_progress,
    plot_compression,
    plot_corpus_stats,
    plot_jaccard_estimates,
    tokens_html,
)
from .model_plots import (
    plot_activation_functions,
    plot_attention,
    plot_kv_cache,
    plot_next_token,
    plot_rope,
)
from .plots import (
    MEMORY_PARTS,
    LiveLoss,
    plot_curves,
    plot_lr_schedule,
    plot_memory_estimates,
    plot_param_breakdown,
)
from .scaling import plot_scaling
from .tables import MarkdownText, markdown_table, preset_choice_rows, show_source

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
    "plot_scaling",
    "preset_choice_rows",
    "show_source",
    "tokens_html",
]
