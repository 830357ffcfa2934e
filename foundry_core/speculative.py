"""Speculative decoding: one request decoded in fewer steps of the big model.

A small draft model guesses a few tokens ahead; the big model checks all of them in one
forward pass and keeps those it agrees with. Greedy decoding of the big model gives the
same tokens either way: only the number of its forward passes changes. The draft is the
preset's small model of `draft_config`, trained on the same tokenizer (distill.py makes
a better one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from .config import ModelConfig
from .engine import check_request
from .generate import until_stop
from .kv_cache import KVCache
from .model import Transformer


def draft_config(config: ModelConfig) -> ModelConfig:
    """A draft model for `config`: the same vocabulary and context, a quarter of the
    width and a third of the layers (at least 32 wide and one layer deep), so that
    guessing a token costs a small share of a step of the big model."""
    d_model = max(32, config.d_model // 4 // 16 * 16)
    return replace(
        config,
        d_model=d_model,
        n_layers=max(1, config.n_layers // 3),
        n_heads=2,
        n_kv_heads=1,
        d_ff=3 * d_model,
    )


@dataclass
class SpeculativeStats:
    """What speculative decoding did: tokens drafted and accepted, calls of the big
    model."""

    drafted: int = 0
    accepted: int = 0
    target_calls: int = 0
    tokens: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / max(1, self.drafted)

    @property
    def tokens_per_call(self) -> float:
        """New tokens per forward pass of the big model (plain decoding: 1)."""
        return self.tokens / max(1, self.target_calls)


@torch.no_grad()
def speculative_generate(
    target: Transformer,
    draft: Transformer,
    prompt: Sequence[int],
    max_new_tokens: int = 100,
    lookahead: int = 4,
    stop_tokens: Sequence[int] = (),
) -> tuple[list[int], SpeculativeStats]:
    """Greedy decoding of `target`, with `draft` guessing `lookahead` tokens ahead.

    The small draft model proposes tokens one by one; the target scores all of them in
    one forward pass and keeps the longest run it agrees with, plus its own next token.
    The output is the target's greedy output (up to float rounding in near ties); only
    the number of target passes changes: fewer when the draft guesses well.
    """
    _check_pair(target, draft, prompt, max_new_tokens, lookahead)
    device = next(target.parameters()).device
    target.eval()
    draft.eval()
    length = len(prompt) + max_new_tokens
    target_cache, draft_cache = (
        KVCache(model.config, 1, length, device, next(model.parameters()).dtype)
        for model in (target, draft)
    )
    stats = SpeculativeStats(target_calls=1)
    ids = torch.tensor([list(prompt)], device=device)
    out = [int(target(ids, cache=target_cache, last_only=True)[0][0, -1].argmax())]
    pending = list(prompt) + out  # tokens the draft has not read yet
    stops = set(stop_tokens)
    while len(out) < max_new_tokens and not stops.intersection(out):
        k = min(lookahead, max_new_tokens - len(out))
        guesses = []
        for _ in range(k):
            feed = torch.tensor([pending], device=device)
            logits = draft(feed, cache=draft_cache, last_only=True)[0]
            guesses.append(int(logits[0, -1].argmax()))
            pending = guesses[-1:]
        # the draft read all but its last guess
        feed = torch.tensor([out[-1:] + guesses], device=device)
        best = target(feed, cache=target_cache)[0][0].argmax(-1).tolist()
        new = accept(guesses, best)
        agreed = len(new) - 1
        target_cache.rewind(k - agreed)  # keys of the rejected guesses
        draft_cache.rewind(k - 1 - min(agreed, k - 1))
        pending = guesses[min(agreed, k - 1) : agreed] + [best[agreed]]
        out += new
        stats.drafted += k
        stats.accepted += agreed
        stats.target_calls += 1
    out = until_stop(out[:max_new_tokens], stops)
    stats.tokens = len(out)
    return out, stats


def accept(guesses: list[int], best: list[int]) -> list[int]:
    """The tokens one round of speculative decoding adds: the draft's guesses up to
    the first one the model disagrees with, then the model's own token there.

    best[i] is the model's greedy token after the first i guesses, so there is one more
    of them than guesses: when every guess is right, the model's next token comes free.
    """
    agreed = 0
    while agreed < len(guesses) and guesses[agreed] == best[agreed]:
        agreed += 1
    return guesses[:agreed] + [best[agreed]]


def _check_pair(
    target: Transformer,
    draft: Transformer,
    prompt: Sequence[int],
    max_new_tokens: int,
    lookahead: int,
) -> None:
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(
            f"the draft's vocabulary ({draft.config.vocab_size}) differs from the "
            f"target's ({target.config.vocab_size}): both must use one tokenizer"
        )
    if lookahead < 1:
        raise ValueError(f"lookahead must be at least 1, got {lookahead}")
    for model in (target, draft):
        check_request(model, prompt, max_new_tokens, 0.0)
