"""The deployment stages: the DPO model quantized (chapter 11) and exported for other
tools (a Hugging Face folder and a GGUF file), cached like every other stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import NamedTuple

from torch import nn

from ..export import save_hf
from ..gguf_export import save_gguf
from ..hf_files import model_card
from ..history import read_history
from ..presets import Preset
from ..quantize import (
    fitting_group_sizes,
    load_quantized,
    quantize_model,
    save_quantized,
)
from .align_stages import ensure_dpo
from .data_stages import ensure_tokenizer
from .store import _build_once, pretrained_dir, stage_dir


class QuantizedModels(NamedTuple):
    """The DPO model in int8 (per channel) and int4 (per group of `group_size`)."""

    int8: nn.Module
    int4: nn.Module
    group_size: int

    def summary(self) -> dict:
        return {"int4 group size": self.group_size}


class ExportFiles(NamedTuple):
    """The DPO model as a Hugging Face folder (weights, tokenizer, chat template, model
    card) and a GGUF file."""

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


def trained_context(preset: Preset) -> int:
    """The longest sequence the aligned model was trained on (pretraining, SFT or
    DPO): the context length other tools should assume."""
    runs = (preset.train, preset.align.sft, preset.align.dpo)
    return min(preset.model.max_seq_len, max(run.seq_len for run in runs))


def export_card(preset: Preset) -> str:
    """The exported model's README.md: the recipe and the numbers its runs logged (read
    from the runs' histories: no model is loaded for it). The stages must be built."""
    pretrained, sft, dpo = (
        read_history(folder)[-1]
        for folder in (
            pretrained_dir(preset),
            stage_dir("sft", preset),
            stage_dir("dpo", preset),
        )
    )
    model = preset.model
    facts = {
        "preset": f"`{preset.name}` ({preset.hardware})",
        "parameters": f"{model.num_params() / 1e6:.2f}M: {model.n_layers} layers, "
        f"width {model.d_model}, {model.n_heads} query / {model.n_kv_heads} kv heads",
        "vocabulary": f"{model.vocab_size} (SentencePiece BPE, byte fallback)",
        "trained context": f"{trained_context(preset)} tokens",
        "pretraining": f"{preset.data.corpus} corpus, {pretrained['step']} steps, "
        f"validation loss {pretrained['val_loss']:.3f}",
        "SFT": f"{sft['step']} steps, held-out loss {sft['val_loss']:.3f}",
        "DPO": f"{dpo['step']} steps, held-out preference accuracy "
        f"{dpo['val_accuracy']:.3f}",
    }
    description = (
        "A small Llama-style model trained from scratch by a reader of LLM Foundry: "
        "pretrained, fine-tuned on instruction tasks (SFT), then aligned with DPO. "
        "It is a teaching model, not an assistant."
    )
    return model_card(
        f"foundry-{preset.name}", description, facts, preset.align.template
    )


def ensure_export(preset: Preset) -> ExportFiles:
    """The DPO model written for transformers (weights, tokenizer, chat template, stop
    tokens, model card) and for llama.cpp (one GGUF file, float32)."""
    folder = stage_dir("export", preset)

    def build(tmp: Path) -> None:
        model, tokenizer = ensure_dpo(preset).model, ensure_tokenizer(preset)
        context, template = trained_context(preset), preset.align.template
        save_hf(
            model,
            tmp / "hf",
            tokenizer=tokenizer,
            template=template,
            context=context,
            card=export_card(preset),
        )
        save_gguf(
            model, tokenizer, tmp / "model.gguf", context=context, template=template
        )

    _build_once(folder, build)
    return ExportFiles(folder / "hf", folder / "model.gguf")
