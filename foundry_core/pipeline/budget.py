"""A preset's data budget: how many tokens pretraining reads, against the size of the
model and of the corpus it reads them from.

Two ratios decide whether a run is sensible. Tokens per parameter: compute-optimal
training reads about 20 (Hoffmann et al. 2022); far fewer and the model is
undertrained, which is fine for a quick run. Passes over the corpus: a model that
reads the same text many times starts to memorise it, and its validation loss turns
back up (overfitting); a few passes cost little (Muennighoff et al. 2023 found up to
about 4 nearly as good as fresh data).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import read_tokens
from ..data.stream import large_corpus_files
from ..presets import Preset
from .data_stages import ensure_tokens

# Passes over one corpus beyond which a run is expected to memorise it
MAX_PASSES = 4.0
COMPUTE_OPTIMAL_TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class DataBudget:
    """The tokens a preset's pretraining reads, its corpus's training tokens and the
    model's parameters."""

    preset: str
    corpus: str
    corpus_tokens: int  # the training split, in the preset's tokenizer
    trained_tokens: int  # batch x seq x accumulation x steps
    params: int

    @property
    def tokens_per_param(self) -> float:
        return self.trained_tokens / self.params

    @property
    def passes(self) -> float:
        """How many times pretraining reads the training split."""
        return self.trained_tokens / self.corpus_tokens

    @property
    def repeats_too_often(self) -> bool:
        return self.passes > MAX_PASSES

    def summary(self) -> dict[str, object]:
        return {
            "corpus": self.corpus,
            "corpus tokens (M)": round(self.corpus_tokens / 1e6, 2),
            "trained tokens (M)": round(self.trained_tokens / 1e6, 2),
            "tokens / param": round(self.tokens_per_param, 2),
            "passes": round(self.passes, 1),
        }

    def __str__(self) -> str:
        return (
            f"{self.preset}: {self.trained_tokens / 1e6:.3g}M tokens read, "
            f"{self.passes:.1f} passes over {self.corpus} "
            f"({self.corpus_tokens / 1e6:.3g}M training tokens),\n"  # fits the book
            f"{self.tokens_per_param:.2g} tokens per parameter "
            f"(compute-optimal: about {COMPUTE_OPTIMAL_TOKENS_PER_PARAM:.0f})"
        )


def data_budget(preset: Preset, corpus_tokens: int | None = None) -> DataBudget:
    """The preset's budget, its corpus measured in its own token file (built if
    missing) unless `corpus_tokens` says how many training tokens it holds."""
    if corpus_tokens is None:
        corpus_tokens = len(read_tokens(ensure_tokens(preset).train))
    corpus = preset.data.corpus
    if large_corpus_files(preset.data.large_corpus) is not None:
        corpus += f" + {preset.data.large_corpus}"
    return DataBudget(
        preset.name,
        corpus,
        corpus_tokens,
        preset.train.total_tokens,
        preset.model.num_params(),
    )
