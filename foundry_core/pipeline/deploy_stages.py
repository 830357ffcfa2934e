"""The deployment stages: the DPO model quantized (chapter 11) and exported for other
tools (a Hugging Face folder and a GGUF file), cached like every other stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import NamedTuple

from torch import nn

from ..export import save_gguf, save_hf
from ..presets import Preset
from ..quantize import (
    fitting_group_sizes,
    load_quantized,
    quantize_model,
    save_quantized,
)
from .align_stages import ensure_dpo
from .data_stages import ensure_tokenizer
from .store import _build_once, stage_dir


class QuantizedModels(NamedTuple):
    """The DPO model in int8 (per channel) and int4 (per group of `group_size`)."""

    int8: nn.Module
    int4: nn.Module
    group_size: int

    def summary(self) -> dict:
        return {"int4 group size": self.group_size}


class ExportFiles(NamedTuple):
    """The DPO model as a Hugging Face folder (with tokenizer.model) and a GGUF file."""

    hf: Path
    gguf: Path

    def summary(self) -> dict:
        return {"gguf MB": round(self.gguf.stat().st_size / 1e6, 2)}


def int4_group_size(model: nn.Module, preset: Preset) -> int:
    """The largest of the recipe's group sizes that divides every layer: the fewest
    scales, so the smallest int4 file."""
    candidates = preset.quantize.group_sizes
    fitting = fitting_group_sizes(model, candidates)
    if not fitting:
        raise ValueError(
            f"no int4 group size of {candidates} divides every layer width of "
            "this model: set quantize.group_sizes"
        )
    return max(fitting)


def ensure_quantized(preset: Preset) -> QuantizedModels:
    """The DPO model quantized to int8 and int4, saved once and loaded from then on."""
    folder = stage_dir("quantized", preset)

    def build(tmp: Path) -> None:
        model = ensure_dpo(preset).model
        group = int4_group_size(model, preset)
        for scheme in ("int8", "int4"):
            quantized = quantize_model(copy.deepcopy(model), scheme, group)
            save_quantized(quantized, tmp / scheme)
        (tmp / "group_size.json").write_text(json.dumps({"group_size": group}))

    _build_once(folder, build)
    group = json.loads((folder / "group_size.json").read_text())["group_size"]
    return QuantizedModels(
        load_quantized(folder / "int8"), load_quantized(folder / "int4"), group
    )


def ensure_export(preset: Preset) -> ExportFiles:
    """The DPO model written for transformers (config, weights, tokenizer.model) and
    for llama.cpp (one GGUF file, float32)."""
    folder = stage_dir("export", preset)

    def build(tmp: Path) -> None:
        model, tokenizer = ensure_dpo(preset).model, ensure_tokenizer(preset)
        hf = save_hf(model, tmp / "hf")
        tokenizer.save(hf / "tokenizer.model")
        save_gguf(model, tokenizer, tmp / "model.gguf")

    _build_once(folder, build)
    return ExportFiles(folder / "hf", folder / "model.gguf")
