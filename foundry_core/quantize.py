"""Weight-only quantization: store the Linear weights in 8 or 4 bits, compute in floating point.

Generating a token reads every weight once, so its speed is bound by memory: fewer bytes per weight
mean a smaller file, less RAM and, with a fused kernel, faster decoding. Each QuantLinear rebuilds its
float weight on the fly before an ordinary F.linear: the storage and the error are real, the speed of
a dedicated int4 kernel is not.

- int8: symmetric, one scale per output row. w ~ q * scale, q in [-127, 127].
- int4: asymmetric, one scale and one zero point per group of `group_size` consecutive inputs of a row.
  w ~ (q - zero) * scale, q in [0, 15], two values packed per byte. Small groups follow the local range
  of the weights (less error) at the cost of more scales (more bytes).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .checkpoint import unique_tensors
from .config import ModelConfig
from .fileio import atomic_directory
from .model import Transformer

SCHEMES = ("int8", "int4")
WEIGHTS, META = "model.safetensors", "quantization.json"
FORMAT = "foundry-quantized-v1"


def quantize_tensor_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scales fp32 (out,)): each row scaled so its largest |w| maps to 127.

    Per row, because rows differ in range: one outlier row would otherwise coarsen every other row.
    127 rather than 128 keeps the grid symmetric, so w and -w quantize to opposite values.
    """
    w = _as_matrix(w)
    scales = w.abs().amax(dim=1) / 127
    scales = torch.where(
        scales > 0, scales, torch.ones_like(scales)
    )  # an all-zero row: any scale works
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales[:, None]


def quantize_tensor_int4(
    w: torch.Tensor, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed uint8 (out, ceil(in/2)), scales fp32 (out, in/g), zeros uint8 (out, in/g)).

    Each group's range [min, max] is stretched to include 0, so that the zero point is an integer in
    [0, 15] and a weight of exactly 0 stays exactly 0. Scales are kept in fp32 (fp16 would save 2 bytes
    per group, 0.5 bit per weight at g=32, but can underflow for tiny weights).
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
    """Pack values in [0, 15] two per byte along the last dimension: element 2i in the low nibble,
    2i+1 in the high one. An odd last dimension is padded with one zero nibble (unpack_int4 trims it)."""
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
    """Inverse of pack_int4: uint8 (..., n) -> uint8 (..., 2n), or (..., length) to drop the padding."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 expects uint8 bytes, got {packed.dtype}")
    length = 2 * packed.shape[-1] if length is None else length
    if not 2 * packed.shape[-1] - 1 <= length <= 2 * packed.shape[-1]:
        raise ValueError(
            f"{packed.shape[-1]} bytes hold 2 * {packed.shape[-1]} values, not {length}"
        )
    q = torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(-2)
    return q[..., :length]


class QuantLinear(nn.Module):
    """A bias-optional Linear whose weight lives as int8 or packed int4 buffers plus scales (and zeros).

    Buffers, not parameters: the layer is for inference and an optimizer must not see integers. They
    move with .to(device) and land in state_dict, so saving and loading need nothing special.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: str = "int8",
        group_size: int | None = None,
        bias: bool = False,
    ):
        super().__init__()
        _check_scheme(scheme)
        self.in_features, self.out_features, self.scheme = (
            in_features,
            out_features,
            scheme,
        )
        self.group_size = group_size if scheme == "int4" else None
        if scheme == "int8":
            self.register_buffer(
                "qweight", torch.zeros(out_features, in_features, dtype=torch.int8)
            )
            self.register_buffer("scales", torch.ones(out_features))
        else:
            _check_group_size(group_size, in_features, "QuantLinear")
            n_groups = in_features // group_size
            self.register_buffer(
                "qweight",
                torch.zeros(out_features, (in_features + 1) // 2, dtype=torch.uint8),
            )
            self.register_buffer("scales", torch.ones(out_features, n_groups))
            self.register_buffer(
                "zeros", torch.zeros(out_features, n_groups, dtype=torch.uint8)
            )
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, scheme: str, group_size: int | None = None
    ) -> "QuantLinear":
        layer = cls(
            linear.in_features,
            linear.out_features,
            scheme,
            group_size,
            bias=linear.bias is not None,
        )
        w = linear.weight.detach().float().cpu()
        parts = (
            quantize_tensor_int8(w)
            if scheme == "int8"
            else quantize_tensor_int4(w, group_size)
        )
        for name, part in zip(("qweight", "scales", "zeros"), parts):
            setattr(layer, name, part)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().float().cpu().clone()
        return layer.to(linear.weight.device)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight (out, in) these integers stand for, computed in fp32 then cast to `dtype`."""
        if self.scheme == "int8":
            w = dequantize_int8(self.qweight, self.scales)
        else:
            w = dequantize_int4(self.qweight, self.scales, self.zeros, self.in_features)
        return w.to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized on access, so code that reads `.weight` (the loss path reads lm_head.weight) works."""
        return self.dequantize()

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: integers, scales, zero points and bias."""
        return sum(b.nbytes for b in self.buffers())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype), bias)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}{group}"


def quantize_model(
    model: nn.Module,
    scheme: str,
    group_size: int = 32,
    skip: tuple[str, ...] = ("lm_head",),
) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by a QuantLinear; return the model.

    `skip` names modules to leave in float, by full name ("layers.0.mlp.down_proj") or last part
    ("down_proj"). lm_head is skipped by default: with tied embeddings its weight IS the embedding
    matrix, so quantizing it would add an int copy beside the float embedding (more bytes, not fewer),
    and the output layer is the one most sensitive to error. Every layer is checked before any is
    replaced, so an error leaves the model untouched.
    """
    _check_scheme(scheme)
    already = [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    if already:
        raise ValueError(
            f"model is already quantized ({len(already)} QuantLinear layers, e.g. {already[0]}): "
            f"quantize the original float model instead"
        )
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not _skipped(name, skip)
    ]
    if scheme == "int4":
        for name, linear in targets:
            _check_group_size(group_size, linear.in_features, name)
    for name, linear in targets:
        _replace(model, name, QuantLinear.from_linear(linear, scheme, group_size))
    return model


def quantization_error(
    w: torch.Tensor, scheme: str, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(error, step) per element of `w`: the dequantized weight minus the original, and the size of one
    quantization step where that element lives (its row's scale for int8, its group's for int4).

    Rounding to the nearest step is never off by more than half a step, so |error| / step <= 0.5 for
    every element: the bound the tests and chapter 10 check.
    """
    _check_scheme(scheme)
    w = _as_matrix(w)
    if scheme == "int8":
        q, scales = quantize_tensor_int8(w)
        return dequantize_int8(q, scales) - w, scales[:, None].expand_as(w)
    packed, scales, zeros = quantize_tensor_int4(w, group_size)
    steps = scales.repeat_interleave(group_size, dim=1)
    return dequantize_int4(packed, scales, zeros, w.shape[1]) - w, steps


def layer_errors(
    model: nn.Module,
    scheme: str,
    group_size: int = 32,
    skip: tuple[str, ...] = ("lm_head",),
) -> dict[str, float]:
    """Relative error ||W_q - W|| / ||W|| of each Linear layer of a float model, without changing it."""
    errors = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not _skipped(name, skip):
            error, _ = quantization_error(m.weight, scheme, group_size)
            errors[name] = (error.norm() / m.weight.detach().float().norm()).item()
    return errors


def fitting_group_sizes(
    model: nn.Module,
    candidates: tuple[int, ...] = (32, 64, 128),
    skip: tuple[str, ...] = ("lm_head",),
) -> list[int]:
    """The candidate int4 group sizes that divide the input width of every Linear layer to quantize."""
    widths = {
        m.in_features
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not _skipped(name, skip)
    }
    return [g for g in candidates if all(width % g == 0 for width in widths)]


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers, each storage counted once (a tied output layer is free),
    plus the packed weights of PyTorch's dynamic int8 layers, which are neither."""
    unique = {
        (t.data_ptr(), t.nbytes): t.nbytes
        for t in [*model.parameters(), *model.buffers()]
    }
    return sum(unique.values()) + sum(_torch_packed_bytes(m) for m in model.modules())


def linear_size_bytes(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Bytes of the Linear layers (float, ours quantized, or PyTorch's dynamic int8) not named in `skip`:
    what quantization shrinks."""
    total = 0
    for name, m in model.named_modules():
        if _skipped(name, skip):
            continue
        if isinstance(m, QuantLinear):
            total += m.nbytes
        elif isinstance(m, nn.Linear):
            total += sum(p.nbytes for p in m.parameters())
        else:
            total += _torch_packed_bytes(m)
    return total


def _torch_packed_bytes(m: nn.Module) -> int:
    """Storage of one of torch's dynamic int8 Linear layers (0 for any other module): the int8 weight,
    its one scale and zero point (8 bytes each), and the float bias."""
    if not (hasattr(m, "_packed_params") and callable(getattr(m, "weight", None))):
        return 0
    weight, bias = m.weight(), m.bias()
    return (
        weight.numel() * weight.element_size()
        + 16
        + (0 if bias is None else bias.nbytes)
    )


def cast_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A copy of `model` whose parameters are stored in `dtype` (bf16 or fp16): the 2-byte baseline.
    Buffers such as the RoPE tables stay in fp32: they are computed, not learned, and small."""
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model


def save_quantized(model: Transformer, folder: str | os.PathLike) -> Path:
    """Write `folder/` atomically: the tensors as safetensors and a JSON saying how to rebuild the model."""
    layers = {
        name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    if not layers:
        raise ValueError("model has no QuantLinear layers: call quantize_model first")
    layouts = {(m.scheme, m.group_size) for m in layers.values()}
    if len(layouts) > 1:
        raise ValueError(
            f"layers mix schemes {sorted(layouts, key=str)}: one folder holds one scheme"
        )
    scheme, group_size = layouts.pop()
    meta = {
        "format": FORMAT,
        "scheme": scheme,
        "group_size": group_size,
        "model_config": model.config.to_dict(),
        "quantized": list(layers),
    }
    with atomic_directory(folder) as tmp:
        save_file(unique_tensors(model), tmp / WEIGHTS)  # a tied lm_head: stored once
        (tmp / META).write_text(json.dumps(meta, indent=2))
    return Path(folder)


def load_quantized(
    folder: str | os.PathLike, config: ModelConfig | None = None
) -> Transformer:
    """Rebuild a model saved by save_quantized, ready for inference (eval mode, on the CPU).

    `config`, if given, must equal the saved one: the stored integers only fit the shapes they came from.
    """
    folder = Path(folder)
    for name in (META, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found: not a folder written by save_quantized"
            )
    meta = json.loads((folder / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{folder / META} has format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    saved = ModelConfig.from_dict(meta["model_config"])
    if config is not None and config != saved:
        diffs = [
            f"{k}={v!r} (saved: {saved.to_dict()[k]!r})"
            for k, v in config.to_dict().items()
            if saved.to_dict()[k] != v
        ]
        raise ValueError(
            f"config does not match the quantized model in {folder}: {', '.join(diffs)}"
        )
    model = Transformer(saved)
    linears = dict(model.named_modules())
    for name in meta["quantized"]:
        linear = linears.get(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(
                f"{folder / META} lists '{name}', which is not a Linear layer of this model"
            )
        _replace(
            model,
            name,
            QuantLinear(
                linear.in_features,
                linear.out_features,
                meta["scheme"],
                meta["group_size"],
                bias=linear.bias is not None,
            ),
        )
    model.load_weights(
        load_file(folder / WEIGHTS, device="cpu"), source=str(folder / WEIGHTS)
    )
    return model.eval()


def torch_dynamic_int8(
    model: nn.Module, skip: tuple[str, ...] = ("lm_head",)
) -> nn.Module:
    """PyTorch's own dynamic int8 quantization of a copy of `model`, as a reference to compare against.

    It differs from ours: one scale per whole matrix (not per row), and it also quantizes the
    activations, per batch, to run an int8 matmul kernel. lm_head is skipped for the same reason as in
    quantize_model. torch.ao.quantization is deprecated in favour of the torchao package; its warnings
    are silenced here and its absence is reported plainly.
    """
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError as err:
        raise RuntimeError(
            f"torch {torch.__version__} no longer has torch.ao.quantization.quantize_dynamic "
            f"(moved to the torchao package): the torch reference is unavailable"
        ) from err
    spec = {
        name: default_dynamic_qconfig
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not _skipped(name, skip)
    }
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # deprecation notices of torch.ao.quantization and qint8 tensors
        return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8).eval()


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    if w.dim() != 2 or not w.dtype.is_floating_point:
        raise ValueError(
            f"expected a float weight matrix (out, in), got {w.dtype} of shape {tuple(w.shape)}"
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
            f"group_size {group_size} does not divide in_features={in_features} of {where}: "
            f"choose a divisor of {in_features}, or skip this layer"
        )


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    return name in skip or name.rpartition(".")[2] in skip


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)
