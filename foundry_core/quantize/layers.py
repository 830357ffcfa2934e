"""QuantLinear, and quantizing a whole model's Linear layers: how, and at what cost.

quantize_model swaps each nn.Linear for a QuantLinear, in place. layer_errors and
fitting_group_sizes look at a float model before that; the size functions count the
bytes any model stores (float, ours or PyTorch's int8), so they can be compared.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tensor import (
    _check_group_size,
    _check_scheme,
    dequantize_int4,
    dequantize_int8,
    quantization_error,
    quantize_tensor_int4,
    quantize_tensor_int8,
)


class QuantLinear(nn.Module):
    """A Linear (bias optional) whose weight is stored as int8 or packed int4.

    The integers, their scales (and int4's zero points) are buffers, not parameters: the
    layer is for inference and an optimizer must not see integers. Buffers move with
    .to(device) and land in state_dict, so saving and loading need nothing special.
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
        """The float weight (out, in) these integers stand for, cast to `dtype`.

        It is computed in fp32 whatever `dtype` is, and only then cast.
        """
        if self.scheme == "int8":
            w = dequantize_int8(self.qweight, self.scales)
        else:
            w = dequantize_int4(self.qweight, self.scales, self.zeros, self.in_features)
        return w.to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized on access, so code that reads `.weight` still works.

        The loss path, for one, reads lm_head.weight.
        """
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
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"scheme={self.scheme}{group}"
        )


def quantize_model(
    model: nn.Module,
    scheme: str,
    group_size: int = 32,
    skip: tuple[str, ...] = ("lm_head",),
) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by a QuantLinear; return the model.

    `skip` names modules to leave in float, by full name ("layers.0.mlp.down_proj") or
    last part ("down_proj"). lm_head is skipped by default: with tied embeddings its
    weight IS the embedding matrix, so quantizing it would add an int copy beside the
    float embedding (more bytes, not fewer), and the output layer is the one most
    sensitive to error. Every layer is checked before any is replaced, so an error
    leaves the model untouched.
    """
    _check_scheme(scheme)
    already = [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    if already:
        raise ValueError(
            f"model is already quantized "
            f"({len(already)} QuantLinear layers, e.g. {already[0]}): "
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


def layer_errors(
    model: nn.Module,
    scheme: str,
    group_size: int = 32,
    skip: tuple[str, ...] = ("lm_head",),
) -> dict[str, float]:
    """Relative error ||W_q - W|| / ||W|| of each Linear layer of a float model.

    The model itself is left unchanged: each weight is quantized on the side.
    """
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
    """The candidate int4 group sizes that fit every Linear layer to be quantized.

    A group size fits a layer when it divides the layer's input width.
    """
    widths = {
        m.in_features
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not _skipped(name, skip)
    }
    return [g for g in candidates if all(width % g == 0 for width in widths)]


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers, each storage counted once.

    A tied output layer is therefore free. The packed weights of PyTorch's dynamic int8
    layers, which are neither parameters nor buffers, are added.
    """
    unique = {
        (t.data_ptr(), t.nbytes): t.nbytes
        for t in [*model.parameters(), *model.buffers()]
    }
    return sum(unique.values()) + sum(_torch_packed_bytes(m) for m in model.modules())


def linear_size_bytes(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Bytes of the Linear layers not named in `skip`: what quantization shrinks.

    Float layers, our QuantLinear and PyTorch's dynamic int8 layers all count.
    """
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
    """Storage of one of torch's dynamic int8 Linear layers; 0 for any other module.

    That is the int8 weight, its one scale and zero point (8 bytes each), and the float
    bias.
    """
    if not (hasattr(m, "_packed_params") and callable(getattr(m, "weight", None))):
        return 0
    weight, bias = m.weight(), m.bias()
    return (
        weight.numel() * weight.element_size()
        + 16
        + (0 if bias is None else bias.nbytes)
    )


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    return name in skip or name.rpartition(".")[2] in skip


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)
