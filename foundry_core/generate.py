"""Turning next-token scores into text: greedy decoding and sampling, one token at a
time.

The model gives a score (logit) for every token in the vocabulary. Decoding picks one,
appends it and asks again. With the KV cache, each step feeds only the new token: the
keys and values of everything before it are already stored (model.KVCache).
"""

from __future__ import annotations

import statistics
import time
from typing import Iterator, Sequence

import torch

from .model import KVCache, Transformer


def check_sampling(
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    max_new_tokens: int,
) -> None:
    """Refuse parameters that have no meaning, with a message that says what the valid
    range is."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
    ):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(
            f"repetition_penalty must be > 0 (1 = none), got {repetition_penalty}"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distribution a sampler draws from, for logits (batch, vocab).

    Repetition penalty divides the positive logits (multiplies the negative ones) of
    tokens already present; temperature rescales the rest; top-k keeps the k best
    tokens; top-p keeps the smallest set of best tokens whose probabilities add up to p.
    Temperature 0 puts all the mass on the best token.
    """
    logits = logits.float().clone()
    if repetition_penalty != 1.0 and previous is not None:
        seen = torch.gather(logits, 1, previous)
        logits.scatter_(
            1,
            previous,
            torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty),
        )
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the better tokens
        # the best token always stays
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _as_batch(
    prompt: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (batch, seq) and, when the prompts differ in length, the mask of real
    tokens.

    Shorter prompts are padded on the left, so every sequence's next token lands in the
    same last column.
    """
    if isinstance(prompt, torch.Tensor):
        rows = prompt[None] if prompt.dim() == 1 else prompt
    elif len(prompt) and hasattr(prompt[0], "__len__"):
        rows = [list(row) for row in prompt]
    else:
        rows = [list(prompt)]
    if len(rows) == 0 or any(len(row) == 0 for row in rows):
        raise ValueError("every prompt must be a non-empty list of token ids")
    if isinstance(rows, torch.Tensor):
        if rows.dim() != 2:
            raise ValueError(
                "a prompt tensor must have shape (seq,) or (batch, seq), "
                f"got {tuple(prompt.shape)}"
            )
        return rows.to(device), None
    longest = max(len(row) for row in rows)
    ids = torch.tensor(
        [[0] * (longest - len(row)) + row for row in rows],
        dtype=torch.long,
        device=device,
    )
    if all(len(row) == longest for row in rows):
        return ids, None
    real = torch.tensor(
        [[False] * (longest - len(row)) + [True] * len(row) for row in rows],
        device=device,
    )
    return ids, real


@torch.no_grad()
def stream(
    model: Transformer,
    prompt,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every sequence in the batch, step by step, until
    max_new_tokens or until every sequence has produced a stop token. Finished
    sequences keep yielding their stop token.

    `prompt` is one list of ids, a list of lists (of any lengths: they are padded on the
    left and the padding is masked) or a (batch, seq) tensor.
    """
    check_sampling(temperature, top_k, top_p, repetition_penalty, max_new_tokens)
    device = next(model.parameters()).device
    ids, real = _as_batch(prompt, device)
    cache = _cache_for(model, ids, max_new_tokens) if use_cache else None
    model.eval()
    logits = model(ids, cache=cache, attention_mask=real, last_only=True)[0][:, -1]
    stops = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        if temperature == 0 and repetition_penalty == 1.0:
            token = logits.argmax(-1)  # greedy: no distribution to build
        else:
            probs = next_token_probs(
                logits, temperature, top_k, top_p, repetition_penalty, ids
            )
            if temperature == 0:
                token = probs.argmax(-1)
            else:
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        if len(stops):
            token = torch.where(finished, stops[0], token)
            finished |= torch.isin(token, stops)
        yield token
        if finished.all():
            return
        ids = torch.cat([ids, token[:, None]], dim=1)
        if real is not None:
            real = torch.cat([real, real.new_ones(real.shape[0], 1)], dim=1)
        if use_cache:
            logits = model(
                token[:, None], cache=cache, attention_mask=real, last_only=True
            )[0][:, -1]
        else:
            logits = model(ids, attention_mask=real, last_only=True)[0][:, -1]


def _cache_for(model: Transformer, ids: torch.Tensor, max_new_tokens: int) -> KVCache:
    """A KV cache with room for the prompt and every new token, or a clear error when
    they would not fit in the model's context."""
    if ids.shape[1] + max_new_tokens > model.config.max_seq_len:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) "
            f"exceed the model's context of {model.config.max_seq_len}: "
            "shorten one of them"
        )
    weights = next(model.parameters())
    length = ids.shape[1] + max_new_tokens
    return KVCache(model.config, ids.shape[0], length, weights.device, weights.dtype)


def generate(
    model: Transformer, prompt, max_new_tokens: int = 100, **sampling
) -> list[list[int]]:
    """The new tokens of each sequence (without the prompt), cut before its first
    stop token."""
    steps = list(stream(model, prompt, max_new_tokens, **sampling))
    if not steps:
        return [[] for _ in range(_as_batch(prompt, torch.device("cpu"))[0].shape[0])]
    out = torch.stack(steps, dim=1).tolist()
    return [until_stop(row, sampling.get("stop_tokens", ())) for row in out]


def until_stop(tokens: list[int], stop_tokens: Sequence[int]) -> list[int]:
    """The tokens before the first stop token (all of them when there is none)."""
    stops = set(stop_tokens)
    return tokens[: next((i for i, t in enumerate(tokens) if t in stops), len(tokens))]


def decode_ms_per_token(
    model: Transformer, prompt: Sequence[int], new_tokens: int = 32, repeats: int = 3
) -> float:
    """Median milliseconds per generated token (batch 1, greedy, with the KV cache): the
    latency a chat user feels (one prefill of a short prompt included). Decoding reads
    every weight once per token, so this is the speed that quantization is meant to
    improve; the first (warm-up) run is not counted."""
    if new_tokens < 1 or repeats < 1:
        raise ValueError(
            f"new_tokens and repeats must be at least 1, got {new_tokens} and {repeats}"
        )
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        generate(model, list(prompt), new_tokens, temperature=0.0)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:]) / new_tokens
