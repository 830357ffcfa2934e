"""Exercises of chapters 10-11: strided perplexity windows, an interval for an
accuracy, and int8 / int4 quantization, checked against the library."""

from __future__ import annotations

import math

import torch

from ..evaluate import proportion_interval, window_plan
from ..quantize import dequantize_int4, quantize_tensor_int4, quantize_tensor_int8
from .check import Case, Exercise, Mistake, register

# ---------------------------------------------------------------- chapter 10


def _window_cases() -> list[Case]:
    return [
        Case("windows side by side (stride = seq_len)", (41, 8, 8)),
        Case("overlapping windows (stride 4 of 8)", (41, 8, 4)),
        Case("a stride that does not divide the text", (30, 8, 3)),
        Case("exactly one window", (9, 8, 8)),
        Case("a text that does not end on a window boundary", (40, 8, 8)),
    ]


def _windows_without_last(n, seq_len, stride):
    plan, scored = [], 0
    for start in range(0, n - seq_len, stride):
        plan.append((start, max(0, scored - start)))
        scored = start + seq_len
    return plan


def _windows_skip_nothing(n, seq_len, stride):
    return [(start, 0) for start, _ in window_plan(n, seq_len, stride)]


register(
    Exercise(
        "window_plan",
        "10",
        "Strided perplexity: windows that score every token once, with context",
        "hard",
        "window_plan(n_tokens, seq_len, stride) -> [(start, skip), ...]",
        window_plan,
        _window_cases,
        [
            Mistake(
                "add a last window that ends at the final token, or the text's tail is "
                "never scored",
                _windows_without_last,
            ),
            Mistake(
                "a window that overlaps the one before must skip the predictions that "
                "window already scored, or those tokens count twice",
                _windows_skip_nothing,
            ),
        ],
    )
)


def _wald(successes, n, z=1.96):
    share = successes / n
    half = z * math.sqrt(share * (1 - share) / n)
    return share - half, share + half


def _interval_cases() -> list[Case]:
    return [
        Case("30 right out of 100", (30, 100)),
        Case("0 right out of 20 (an accuracy of 0 is not certain)", (0, 20)),
        Case("148 right out of 150", (148, 150)),
    ]


register(
    Exercise(
        "accuracy_interval",
        "10",
        "A 95% Wilson interval for an accuracy measured on n questions",
        "medium",
        "accuracy_interval(successes, n) -> (low, high)",
        proportion_interval,
        _interval_cases,
        [
            Mistake(
                "mean +- 1.96 standard errors (Wald) collapses to a point at 0 or n "
                "successes and leaves [0, 1] near them: use Wilson's score interval",
                _wald,
            ),
        ],
        atol=1e-6,
    )
)


# ---------------------------------------------------------------- chapter 11


def _weights() -> torch.Tensor:
    w = 0.05 * torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    w[1] *= 20  # one row with a much larger range
    w[2] = 0.0  # an all-zero row
    return w


def int8_reference(w: torch.Tensor) -> torch.Tensor:
    return torch.mul(*(lambda q, s: (q.float(), s[:, None]))(*quantize_tensor_int8(w)))


register(
    Exercise(
        "int8_roundtrip",
        "11",
        "int8 per output channel: quantize and dequantize a weight matrix",
        "medium",
        "int8_roundtrip(w) -> w_hat   # w: (out, in); per row, max |w| -> 127",
        int8_reference,
        lambda: [Case("4 rows, one with a wide range, one all zero", (_weights(),))],
        [
            Mistake(
                "one scale per row (output channel), not one for the whole matrix: a "
                "row with large weights would coarsen every other row",
                lambda w: (
                    torch.round(w / (w.abs().max() / 127)).clamp(-127, 127)
                    * (w.abs().max() / 127)
                ),
            ),
            Mistake(
                "round to the nearest integer; casting to int8 truncates towards zero",
                lambda w: (
                    (w / (w.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127))
                    .to(torch.int8)
                    .float()
                    * (w.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127)
                ),
            ),
        ],
        atol=1e-7,
    )
)


def int4_reference(w: torch.Tensor, group_size: int) -> torch.Tensor:
    packed, scales, zeros = quantize_tensor_int4(w, group_size)
    return dequantize_int4(packed, scales, zeros, w.shape[1])


def _int4(w, group_size, zero_point=True):
    groups = w.reshape(w.shape[0], -1, group_size)
    if zero_point:
        low = groups.amin(-1, keepdim=True).clamp(max=0)
        high = groups.amax(-1, keepdim=True).clamp(min=0)
        scale = ((high - low) / 15).clamp(min=1e-12)
        zero = torch.round(-low / scale)
        q = (torch.round(groups / scale) + zero).clamp(0, 15)
        return ((q - zero) * scale).reshape(w.shape)
    scale = (groups.abs().amax(-1, keepdim=True) / 7).clamp(min=1e-12)
    return (torch.round(groups / scale).clamp(-8, 7) * scale).reshape(w.shape)


register(
    Exercise(
        "int4_roundtrip",
        "11",
        "int4 with groups: a scale and a zero point per group of weights",
        "hard",
        "int4_roundtrip(w, group_size) -> w_hat   # 16 levels per group, 0 exact",
        int4_reference,
        lambda: [
            Case("groups of 32", (_weights(), 32)),
            Case("groups of 16", (_weights(), 16)),
        ],
        [
            Mistake(
                "one scale per group of group_size weights along each row, not one per "
                "row",
                lambda w, g: _int4(w, w.shape[1]),
            ),
            Mistake(
                "use all 16 levels: stretch each group's [min, max] (widened to "
                "include 0) over 0..15 with an integer zero point, not a symmetric "
                "-7..7 grid",
                lambda w, g: _int4(w, g, zero_point=False),
            ),
        ],
        atol=1e-6,
    )
)
