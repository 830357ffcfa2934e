"""SFT through LoRA adapters (chapter 6): the same tasks, data and template as full
SFT, on the pretrained model's float weights (LoRA) or on its int4 weights (QLoRA).

The folder keeps the adapters alone (1 MB at the cpu preset, whose weights are 22 MB)
and the run's history; loading rebuilds the base and puts the adapters back on it, so
the base's fingerprint is checked every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..align import get_template
from ..lora import PROJECTIONS, apply_lora, load_adapter, save_adapter
from ..presets import Preset
from ..quantize import quantize_model
from ..tokenizer import SPECIAL_TOKENS, Tokenizer
from ..train import Trainer
from .align_stages import chat_datasets
from .data_stages import ensure_tokenizer
from .deploy_stages import int4_group_size
from .pretrain import ensure_pretrained
from .results import TrainedStage
from .store import _build_once, stage_dir

ADAPTER = "adapter.safetensors"


def template_tokens(tokenizer: Tokenizer, template: str) -> list[int]:
    """The ids the chat template writes that plain text never holds: the tokenizer's
    special pieces and the end-of-turn token. Their rows train with the adapters."""
    special = tokenizer.special_token_ids()
    ids = {special[piece] for piece in SPECIAL_TOKENS if piece in special}
    return sorted(ids | {get_template(template).end_of_turn(tokenizer)})


def lora_base(preset: Preset, int4: bool = False) -> torch.nn.Module:
    """The frozen model the adapters sit on: the pretrained model, or (QLoRA) the same
    model with every block's projections quantized to int4 as in chapter 11."""
    model = ensure_pretrained(preset).model
    if int4:
        quantize_model(model, "int4", int4_group_size(model, preset))
    return model


def with_adapters(model: torch.nn.Module, preset: Preset) -> torch.nn.Module:
    """`model` with the recipe's adapters, in place: rank `align.lora_rank` on every
    projection of every block and on the token matrix (embedding and head), and the
    chat template's token rows."""
    settings = preset.align
    return apply_lora(
        model,
        settings.lora_rank,
        settings.lora_alpha,
        targets=PROJECTIONS,
        tokens=template_tokens(ensure_tokenizer(preset), settings.template),
        embedding_rank=settings.lora_rank,
    )


def ensure_lora(
    preset: Preset, int4: bool = False, callbacks: tuple = (), progress: bool = False
) -> TrainedStage:
    """The pretrained model fine-tuned on the instruction tasks through the recipe's
    adapters (`with_adapters`) with the `align.lora` run; `int4=True` for QLoRA.
    Trained once, then loaded."""
    stage = "qlora" if int4 else "lora"
    settings = preset.align
    folder = stage_dir(stage, preset)

    def build(tmp: Path) -> None:
        torch.manual_seed(settings.lora.seed)  # the adapters' start and the run
        model = with_adapters(lora_base(preset, int4), preset)
        train, val = chat_datasets(preset)
        trainer = Trainer(
            model, settings.lora, train, val, callbacks=callbacks, progress=progress
        )
        history = trainer.fit()
        save_adapter(model, tmp / ADAPTER)
        (tmp / "history.json").write_text(json.dumps(history))

    _build_once(folder, build)
    model = load_adapter(lora_base(preset, int4), folder / ADAPTER)
    history = json.loads((folder / "history.json").read_text())
    return TrainedStage(model.eval(), history)
