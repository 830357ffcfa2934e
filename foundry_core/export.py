"""Save models for other tools: the Hugging Face Llama format.

A Hugging Face folder (config.json + model.safetensors, and with a tokenizer the files
of hf_files.py) loads with `AutoModelForCausalLM` and `AutoTokenizer`; the tests check
logits, tokens and chat generation against ours with transformers. Our module names
already match Llama's, so conversion is only a `model.` prefix; nothing is transposed
or permuted (our RoPE uses the same half-split pairing).

GGUF, for llama.cpp, is in gguf_export.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .fileio import atomic_write, atomic_write_bytes
from .hf_files import save_tokenizer_files, special_ids
from .model import Transformer
from .tokenizer import Tokenizer

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameter names with Hugging Face's prefixes; a tied output matrix is
    stored once."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if not model.config.tie_embeddings:
                state[name] = tensor
        else:
            state[f"model.{name}"] = tensor
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def hf_config(
    config: ModelConfig,
    dtype: torch.dtype = torch.float32,
    context: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> dict:
    """The LlamaConfig fields that describe `config`. `context`: the longest sequence
    the model was trained on (default its max_seq_len), which tools read as the
    context length; the tokenizer's special ids, when given."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": context or config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout,
        "torch_dtype": str(dtype).removeprefix("torch."),
        **(special_ids(tokenizer) if tokenizer else {}),
    }


def save_hf(
    model: Transformer,
    folder: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    tokenizer: Tokenizer | None = None,
    template: str = "chatml",
    context: int | None = None,
    card: str | None = None,
) -> Path:
    """Write config.json and model.safetensors into `folder`, each atomically (temporary
    file + rename). With `tokenizer`, the folder also gets the tokenizer, its chat
    `template` and the stop tokens (hf_files.py), so that transformers can chat with it;
    `context` is the trained sequence length; `card` is written as README.md."""
    folder = Path(folder)
    if tokenizer is not None:
        tokenizer.check_compatible(model.config.vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype) for k, v in to_hf_state_dict(model).items()}
    atomic_write(
        folder / WEIGHTS_NAME,
        lambda path: save_file(tensors, path, metadata={"format": "pt"}),
    )
    atomic_write_bytes(
        folder / CONFIG_NAME,
        json.dumps(
            hf_config(model.config, dtype, context, tokenizer), indent=2
        ).encode(),
    )
    if tokenizer is not None:
        save_tokenizer_files(
            tokenizer, folder, template, context or model.config.max_seq_len
        )
    if card is not None:
        atomic_write_bytes(folder / "README.md", card.encode())
    return folder


def config_from_hf(values: dict) -> ModelConfig:
    """A ModelConfig from a Llama config.json, refusing features our model lacks."""
    if values.get("model_type") != "llama":
        raise ValueError(
            "expected a Llama checkpoint (model_type 'llama'), "
            f"got {values.get('model_type')!r}"
        )
    rope = values.get("rope_scaling") or values.get("rope_parameters") or {}
    checks = {
        "rope_scaling": rope.get("rope_type", rope.get("type", "default")) != "default",
        "attention_bias": bool(values.get("attention_bias")),
        "mlp_bias": bool(values.get("mlp_bias")),
        "hidden_act": values.get("hidden_act", "silu") != "silu",
    }
    if any(checks.values()):
        names = ", ".join(name for name, bad in checks.items() if bad)
        raise ValueError(
            "this Llama checkpoint uses features foundry_core does not implement: "
            f"{names}"
        )
    heads = values["num_attention_heads"]
    if (
        values.get("head_dim", values["hidden_size"] // heads) * heads
        != values["hidden_size"]
    ):
        raise ValueError(
            "head_dim * num_attention_heads != hidden_size is not supported"
        )
    rope_base = values.get("rope_theta") or rope.get("rope_theta", 10000.0)
    return ModelConfig(
        vocab_size=values["vocab_size"],
        d_model=values["hidden_size"],
        n_layers=values["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=values.get("num_key_value_heads") or heads,
        d_ff=values["intermediate_size"],
        max_seq_len=values["max_position_embeddings"],
        rope_base=float(rope_base),
        dropout=float(values.get("attention_dropout", 0.0)),
        tie_embeddings=bool(values.get("tie_word_embeddings", False)),
        norm_eps=float(values.get("rms_norm_eps", 1e-5)),
    )


def load_hf(folder: str | os.PathLike) -> Transformer:
    """Build a Transformer from a Hugging Face Llama folder
    (config.json + model.safetensors)."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found: a Hugging Face model folder holds "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} "
                "(sharded checkpoints are not supported)"
            )
    config = config_from_hf(json.loads((folder / CONFIG_NAME).read_text()))
    tensors = load_file(folder / WEIGHTS_NAME)
    state = {k.removeprefix("model."): v.float() for k, v in tensors.items()}
    model = Transformer(config)
    model.load_weights(state, source=str(folder / WEIGHTS_NAME))
    return model
