"""Save and load models in the Hugging Face Llama format: a folder with config.json + model.safetensors.

Such a folder loads with `transformers.LlamaForCausalLM.from_pretrained(folder)` and in every tool that
reads Llama checkpoints. Our module names already match Llama's, so conversion is only a `model.`
prefix; nothing is transposed or permuted (our RoPE uses the same half-split pairing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .fileio import atomic_write, atomic_write_bytes
from .model import Transformer

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameter names with Hugging Face's prefixes; a tied output matrix is stored once."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if not model.config.tie_embeddings:
                state[name] = tensor
        else:
            state[f"model.{name}"] = tensor
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def hf_config(config: ModelConfig, dtype: torch.dtype = torch.float32) -> dict:
    """The LlamaConfig fields that describe `config`."""
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
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def save_hf(model: Transformer, folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json and model.safetensors into `folder`, each atomically (temporary file + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype) for k, v in to_hf_state_dict(model).items()}
    atomic_write(folder / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, json.dumps(hf_config(model.config, dtype), indent=2).encode())
    return folder


def config_from_hf(values: dict) -> ModelConfig:
    """A ModelConfig from a Llama config.json, refusing features our model does not implement."""
    if values.get("model_type") != "llama":
        raise ValueError(f"expected a Llama checkpoint (model_type 'llama'), got {values.get('model_type')!r}")
    rope = values.get("rope_scaling") or values.get("rope_parameters") or {}
    checks = {
        "rope_scaling": rope.get("rope_type", rope.get("type", "default")) != "default",
        "attention_bias": bool(values.get("attention_bias")),
        "mlp_bias": bool(values.get("mlp_bias")),
        "hidden_act": values.get("hidden_act", "silu") != "silu",
    }
    if any(checks.values()):
        names = ", ".join(name for name, bad in checks.items() if bad)
        raise ValueError(f"this Llama checkpoint uses features foundry_core does not implement: {names}")
    heads = values["num_attention_heads"]
    if values.get("head_dim", values["hidden_size"] // heads) * heads != values["hidden_size"]:
        raise ValueError("head_dim * num_attention_heads != hidden_size is not supported")
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
    """Build a Transformer from a Hugging Face Llama folder (config.json + model.safetensors)."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: a Hugging Face model folder holds "
                                    f"{CONFIG_NAME} and {WEIGHTS_NAME} (sharded checkpoints are not supported)")
    config = config_from_hf(json.loads((folder / CONFIG_NAME).read_text()))
    tensors = load_file(folder / WEIGHTS_NAME)
    state = {k.removeprefix("model."): v.float() for k, v in tensors.items()}
    model = Transformer(config)
    model.load_weights(state, source=str(folder / WEIGHTS_NAME))
    return model
