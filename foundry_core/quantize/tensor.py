"""Quantizing one weight matrix: int8 per row, int4 per group, two int4 per byte.

All the arithmetic of the package lives here; the other modules apply it to a model's
Linear layers, measure it, or store its output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCHEMES = ("int8", "int4")


def quantize_tensor_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scales fp32 (out,)): each row's largest |w| maps to 127.

    Per row, because rows differ in range: one outlier row would otherwise coarsen every
    other row. 127 rather than 128 keeps the grid symmetric, so w and -w quantize to
    opposite values.
    """
    w = _as_matrix(w)
    scales = w.abs().amax(dim=1) / 127
    # an all-zero row: any scale works
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales[:, None]


def quantize_tensor_int4(
    w: torch.Tensor, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed uint8 (out, ceil(in/2)), scales fp32 (out, in/g), zeros uint8 (same)).

    Each group's range [min, max] is stretched to include 0, so that the zero point is
    an integer in [0, 15] and a weight of exactly 0 stays exactly 0. Scales are kept in
    fp32 (fp16 would save 2 bytes per group, 0.5 bit per weight at g=32, but can
    underflow for tiny weights).
    """
    w = _as_matrix(w)
    _check_group_size(group_size, w.shape[1], "this weight")
    groups = w.reshape(w.shape[0], -1, group_size)
    low = groups.amin(dim=-1).clamp(max=0)
    high = groups.amax(dim=-1).clamp(min=0)
    scales = (high - low) / 15
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    zeros = torch.round(-low / scales).clamp(0, 15)
    q = (
        (torch.round(groups / scales[..., None]) + zeros[..., None])
        .clamp(0, 15)
        .to(torch.uint8)
    )
    return pack_int4(q.reshape(w.shape)), scales, zeros.to(torch.uint8)


def dequantize_int4(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, in_features: int
) -> torch.Tensor:
    q = (
        unpack_int4(packed, in_features)
        .reshape(scales.shape[0], scales.shape[1], -1)
        .float()
    )
    return ((q - zeros[..., None].float()) * scales[..., None]).reshape(
        scales.shape[0], in_features
    )


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack values in [0, 15] two per byte along the last dimension.

    Element 2i goes in the low nibble, 2i+1 in the high one. An odd last dimension is
    padded with one zero nibble (unpack_int4 trims it).
    """
    if q.dtype.is_floating_point or q.dtype == torch.bool:
        raise ValueError(f"pack_int4 expects an integer tensor, got {q.dtype}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError(
            f"pack_int4 expects values in [0, 15], got [{int(q.min())}, {int(q.max())}]"
        )
    q = q.to(torch.uint8)
    if q.shape[-1] % 2:
        q = F.pad(q, (0, 1))
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Inverse of pack_int4: uint8 (..., n) -> uint8 (..., 2n).

    Pass `length` (2n - 1 for an odd original) to drop the padding nibble.
    """
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 expects uint8 bytes, got {packed.dtype}")
    length = 2 * packed.shape[-1] if length is None else length
    if not 2 * packed.shape[-1] - 1 <= length <= 2 * packed.shape[-1]:
        raise ValueError(
            f"{packed.shape[-1]} bytes hold 2 * {packed.shape[-1]} values, not {length}"
        )
    q = torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(-2)
    return q[..., :length]


def quantization_error(
    w: torch.Tensor, scheme: str, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(error, step) for each element of `w`.

    The error is the dequantized weight minus the original; the step is the size of one
    quantization step where that element lives (its row's scale for int8, its group's
    for int4).

    Rounding to the nearest step is never off by more than half a step, so every element
    has |error| / step <= 0.5: the bound the tests and chapter 11 check.
    """
    _check_scheme(scheme)
    w = _as_matrix(w)
    if scheme == "int8":
        q, scales = quantize_tensor_int8(w)
        return dequantize_int8(q, scales) - w, scales[:, None].expand_as(w)
    packed, scales, zeros = quantize_tensor_int4(w, group_size)
    steps = scales.repeat_interleave(group_size, dim=1)
    return dequantize_int4(packed, scales, zeros, w.shape[1]) - w, steps


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    if w.dim() != 2 or not w.dtype.is_floating_point:
        raise ValueError(
            f"expected a float weight matrix (out, in), "
            f"got {w.dtype} of shape {tuple(w.shape)}"
        )
    return w.detach().float()


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown scheme {scheme!r}: choose one of {', '.join(SCHEMES)}"
        )


def _check_group_size(group_size: int | None, in_features: int, where: str) -> None:
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or group_size <= 0
    ):
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if in_features % group_size:
        raise ValueError(
            f"group_size {group_size} does not divide "
            f"in_features={in_features} of {where}: "
            f"choose a divisor of {in_features}, or skip this layer"
        )
