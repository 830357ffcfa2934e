"""Swap it in: the reader's piece replaces the library's inside the real model or
trainer, and a short training run must match the library's run step by step.

An exercise checks a piece on its own; these check it where it lives. Each runs the
real `Trainer` for a few steps on a small model, once with the library's piece and
once with the reader's, from the same initial weights and the same batches, in
float32 on the CPU, and compares the losses. A piece that is right up to rounding
gives the same run; one that is wrong shows at the first step it matters, and a
piece that only works forward (no gradients, in-place edits) fails here too.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from ..align.dpo import add_reference_logprobs, make_dpo_loss
from ..align.pairs import PairDataset
from ..config import ModelConfig, TrainConfig
from ..hardware import detect
from ..model import Transformer
from ..optim import lr_at
from ..train import Trainer
from . import training, transformer  # noqa: F401 (their mistakes, reused)
from .alignment import dpo_reference
from .check import REGISTRY, Case, Exercise, register

TINY = ModelConfig(
    vocab_size=64,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=64,
    max_seq_len=16,
)
RUN = TrainConfig(
    batch_size=4,
    seq_len=16,
    max_steps=10,
    warmup_steps=3,
    lr=1e-2,
    min_lr=1e-3,
    dtype="float32",
    eval_interval=100,
    seed=0,
)


def _token_stream(n: int = 4096) -> np.ndarray:
    """Each token is the previous one plus 1, 2 or 3 (mod 64): a pattern the model
    starts to learn within a few steps."""
    steps = np.random.default_rng(0).integers(1, 4, n)
    return (np.cumsum(steps) % TINY.vocab_size).astype(np.int64)


def _losses(model: Transformer, config: TrainConfig, data, **trainer) -> tuple:
    """Train for config.max_steps on the CPU; the loss of every step."""
    run = Trainer(model, config, data, hardware=detect("cpu"), **trainer)
    return tuple(record["loss"] for record in run.fit())


def _fresh_model(config: ModelConfig) -> Transformer:
    """The same initial weights every time, without touching the reader's RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Transformer(config)


def _by_step(index: int) -> str:
    return f"step {index + 1}"


# ---------------------------------------------------------------- chapter 03


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The library's attention as a function of q, k, v: the fused kernel, called as
    Attention._sdpa calls it on a whole sequence."""
    return F.scaled_dot_product_attention(
        q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1]
    )


def attention_run(attention: Callable | None, n_kv_heads: int) -> tuple:
    """Train TINY with `attention(q, k, v)` in every layer (None: the model as is)."""
    model = _fresh_model(replace(TINY, n_kv_heads=n_kv_heads))
    if attention is not None:
        for block in model.layers:
            # Training calls _sdpa on whole sequences (nothing cached, no padding).
            block.self_attn._sdpa = lambda q, k, v, past, key_mask=None: attention(
                q, k, v
            )
    return _losses(model, RUN, _token_stream())


register(
    Exercise(
        "swap_attention",
        "03",
        "Your causal attention in every layer of a Transformer, trained 10 steps",
        "medium",
        "causal_attention(q, k, v) -> Tensor   # from the exercise above",
        fused_attention,
        lambda: [
            Case(
                f"{RUN.max_steps} training steps, 4 query heads, {n} key/value heads",
                (n,),
            )
            for n in (2, 1)
        ],
        REGISTRY["causal_attention"].mistakes,
        hint="your attention matches on one input but not inside the model: it must "
        "work for any batch, heads and length, and let gradients flow (no .item(), "
        "no in-place edits of q, k or v)",
        atol=1e-4,
        adapt=lambda attention: partial(attention_run, attention),
        item=_by_step,
    )
)


# ---------------------------------------------------------------- chapter 04


def schedule_run(schedule: Callable[[int, TrainConfig], float]) -> tuple:
    """Train TINY with the learning rate of each step from `schedule`."""
    return _losses(_fresh_model(TINY), RUN, _token_stream(), schedule=schedule)


register(
    Exercise(
        "swap_schedule",
        "04",
        "Your learning-rate schedule driving the Trainer",
        "easy",
        "lr_at(step, config) -> float   # from the exercise above",
        lr_at,
        lambda: [Case(f"{RUN.max_steps} steps, warmup {RUN.warmup_steps}", ())],
        # The Trainer stops at max_steps, so a schedule wrong only after it trains the
        # same: that mistake is for the exercise above to catch.
        [
            m
            for m in REGISTRY["lr_schedule"].mistakes
            if "after max_steps" not in m.hint
        ],
        atol=1e-5,
        adapt=lambda schedule: partial(schedule_run, schedule),
        item=_by_step,
    )
)


# ---------------------------------------------------------------- chapter 08


class SyntheticPairs(PairDataset):
    """Preference pairs of token ids, no tokenizer needed: after a random prompt the
    chosen answer counts on from its last token, the rejected one is random."""

    def __init__(self, n_pairs: int = 16, prompt_len: int = 5, answer_len: int = 4):
        rng = np.random.default_rng(1)
        vocab = TINY.vocab_size
        self.items, self.reference = [], None
        for _ in range(n_pairs):
            prompt = rng.integers(4, vocab, prompt_len).tolist()
            chosen = [(prompt[-1] + i) % vocab for i in range(1, answer_len + 1)]
            rejected = rng.integers(4, vocab, answer_len).tolist()
            trained = [False] * prompt_len + [True] * answer_len
            self.items.append(
                [(prompt + chosen, trained), (prompt + rejected, trained)]
            )


DPO_RUN = replace(RUN, lr=1e-3, min_lr=1e-4)


def dpo_run(loss: Callable, beta: float) -> tuple:
    """DPO on SyntheticPairs with `loss(policy_chosen, policy_rejected,
    reference_chosen, reference_rejected, beta)` as the pair loss."""
    policy = _fresh_model(TINY)
    pairs = SyntheticPairs()
    add_reference_logprobs(copy.deepcopy(policy), pairs)

    def pair_loss(pc, pr, rc, rr, beta):
        return loss(pc, pr, rc, rr, beta), beta * (pc - rc), beta * (pr - rr)

    return _losses(
        policy, DPO_RUN, pairs, loss_fn=make_dpo_loss(beta, pair_loss=pair_loss)
    )


register(
    Exercise(
        "swap_dpo_loss",
        "08",
        "Your DPO loss training a policy in the Trainer",
        "medium",
        "dpo_loss(policy_chosen, policy_rejected, reference_chosen, "
        "reference_rejected, beta) -> loss   # from the exercise above",
        dpo_reference,
        lambda: [
            Case(f"{DPO_RUN.max_steps} DPO steps on 16 pairs, beta {beta}", (beta,))
            for beta in (0.1, 0.5)
        ],
        REGISTRY["dpo_loss"].mistakes,
        hint="the loss must stay a tensor that gradients flow through: no .item() "
        "or float(), and a mean over the pairs",
        atol=1e-5,
        adapt=lambda loss: partial(dpo_run, loss),
        item=_by_step,
    )
)
