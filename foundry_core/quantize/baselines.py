"""What our quantization is measured against: a 2-byte copy, and PyTorch's own int8.

cast_weights stores the parameters in bf16 or fp16, the usual baseline.
torch_dynamic_int8 is PyTorch's dynamic int8 quantization: one scale per matrix, and
int8 activations too.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from .layers import _skipped


def cast_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A copy of `model` with its parameters in `dtype` (bf16 or fp16): 2 bytes each.

    Buffers such as the RoPE tables stay in fp32: they are computed, not learned, and
    small.
    """
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model


def torch_dynamic_int8(
    model: nn.Module, skip: tuple[str, ...] = ("lm_head",)
) -> nn.Module:
    """PyTorch's own dynamic int8 quantization of a copy of `model`, for comparison.

    It differs from ours: one scale per whole matrix (not per row), and it also
    quantizes the activations, per batch, to run an int8 matmul kernel. lm_head is
    skipped for the same reason as in quantize_model. torch.ao.quantization is
    deprecated in favour of the torchao package; its warnings are silenced here and its
    absence is reported plainly.
    """
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError as err:
        raise RuntimeError(
            f"torch {torch.__version__} no longer has "
            "torch.ao.quantization.quantize_dynamic "
            f"(moved to the torchao package): the torch reference is unavailable"
        ) from err
    spec = {
        name: default_dynamic_qconfig
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not _skipped(name, skip)
    }
    with warnings.catch_warnings():
        # deprecation notices of torch.ao.quantization and qint8 tensors
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8).eval()
