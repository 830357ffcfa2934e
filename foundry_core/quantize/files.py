"""A quantized model on disk: a safetensors file plus a JSON saying how to rebuild it.

The integers only fit the shapes they came from, so the JSON records the model config,
the scheme and which layers were quantized, and loading checks them before any tensor
is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..checkpoint import unique_tensors
from ..config import ModelConfig
from ..fileio import atomic_directory
from ..model import Transformer
from .layers import QuantLinear, _replace

WEIGHTS, META = "model.safetensors", "quantization.json"
FORMAT = "foundry-quantized-v1"


def save_quantized(model: Transformer, folder: str | os.PathLike) -> Path:
    """Write `folder/` atomically: the tensors, and how to rebuild the model for them.

    The tensors go in a safetensors file; the scheme, config and layer names in a JSON.
    """
    layers = {
        name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    if not layers:
        raise ValueError("model has no QuantLinear layers: call quantize_model first")
    layouts = {(m.scheme, m.group_size) for m in layers.values()}
    if len(layouts) > 1:
        raise ValueError(
            f"layers mix schemes {sorted(layouts, key=str)}: "
            "one folder holds one scheme"
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
    """Rebuild a model saved by save_quantized, for inference (eval mode, on the CPU).

    `config`, if given, must equal the saved one: the stored integers only fit the
    shapes they came from.
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
                f"{folder / META} lists '{name}', "
                "which is not a Linear layer of this model"
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
