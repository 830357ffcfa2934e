"""Save models for other tools: the Hugging Face Llama format, and GGUF for llama.cpp.

A Hugging Face folder (config.json + model.safetensors) loads with
`transformers.LlamaForCausalLM.from_pretrained(folder)` and in every tool that reads
Llama checkpoints. Our module names already match Llama's, so conversion is only a
`model.` prefix; nothing is transposed or permuted (our RoPE uses the same half-split
pairing).

A GGUF file holds the weights, the hyperparameters and the tokenizer in one file, which
llama.cpp (and the tools built on it: Ollama, LM Studio) run on a laptop CPU. Its
tensors have their own names, and its Llama graph pairs RoPE dimensions differently, so
the query and key rows are reordered (see to_gguf_rope_order).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .fileio import atomic_write, atomic_write_bytes
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


def save_hf(
    model: Transformer, folder: str | os.PathLike, dtype: torch.dtype = torch.float32
) -> Path:
    """Write config.json and model.safetensors into `folder`, each atomically (temporary
    file + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype) for k, v in to_hf_state_dict(model).items()}
    atomic_write(
        folder / WEIGHTS_NAME,
        lambda path: save_file(tensors, path, metadata={"format": "pt"}),
    )
    atomic_write_bytes(
        folder / CONFIG_NAME,
        json.dumps(hf_config(model.config, dtype), indent=2).encode(),
    )
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


# ---------------------------------------------------------------- GGUF (llama.cpp)

GGUF_GLOBAL_NAMES = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# our CHATML template (align/chat.py) in the Jinja syntax that llama.cpp's chat mode
# and other front ends read
CHATML_JINJA = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def gguf_name(name: str) -> str:
    """llama.cpp's name for one of our parameters:
    layers.3.mlp.up_proj.weight -> blk.3.ffn_up.weight."""
    if name in GGUF_GLOBAL_NAMES:
        return GGUF_GLOBAL_NAMES[name]
    match = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if not match or match.group(2) not in GGUF_LAYER_NAMES:
        raise ValueError(f"no GGUF name for parameter {name!r}")
    return f"blk.{match.group(1)}.{GGUF_LAYER_NAMES[match.group(2)]}.weight"


def to_gguf_rope_order(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the output rows of a q_proj or k_proj weight, head by head, for
    llama.cpp's RoPE.

    Our RoPE (like Hugging Face's) rotates dimension i of a head together with dimension
    i + head_dim/2; llama.cpp's Llama graph rotates neighbours 2i and 2i + 1, at the
    same frequency for the same i. Moving row i to 2i and row i + head_dim/2 to 2i + 1
    makes its pairs ours. Queries and keys are reordered alike, and a dot product does
    not depend on the order of the dimensions, so attention is unchanged.
    """
    rows, columns = weight.shape
    half = rows // n_heads // 2
    return (
        weight.reshape(n_heads, 2, half, columns).transpose(1, 2).reshape(rows, columns)
    )


def from_gguf_rope_order(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of to_gguf_rope_order: interleaved pairs back to half-split pairs."""
    rows, columns = weight.shape
    half = rows // n_heads // 2
    return (
        weight.reshape(n_heads, half, 2, columns).transpose(1, 2).reshape(rows, columns)
    )


def gguf_tensors(
    model: Transformer, dtype: torch.dtype = torch.float32
) -> dict[str, np.ndarray]:
    """Every tensor under its llama.cpp name, as numpy arrays in PyTorch's (out, in)
    order (GGUF lists the dimensions the other way round, fastest first; the bytes are
    the same).

    A tied output matrix is not written: llama.cpp's Llama loader uses token_embd when
    output.weight is missing, as for every tied checkpoint that the Hugging Face
    converter writes. Norm gains stay in float32 (they are tiny, and llama.cpp reads
    them as float32); matrices take `dtype`.
    """
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"GGUF export writes float32 or float16, got {dtype}")
    config, out = model.config, {}
    for name, tensor in to_hf_state_dict(model).items():
        name = name.removeprefix("model.")
        if name.endswith("q_proj.weight"):
            tensor = to_gguf_rope_order(tensor, config.n_heads)
        elif name.endswith("k_proj.weight"):
            tensor = to_gguf_rope_order(tensor, config.n_kv_heads)
        tensor = tensor.float() if tensor.dim() == 1 else tensor.to(dtype)
        out[gguf_name(name)] = tensor.numpy()
    return out


def gguf_token_types(tokenizer: Tokenizer) -> list[int]:
    """llama.cpp's kind of each piece (gguf.TokenType values): what it may merge, and
    what it never prints."""
    from gguf import TokenType

    # control pieces (caught first) and the chat markers
    specials = set(tokenizer.special_token_ids().values())
    sp, types = tokenizer.sp, []
    for i in range(tokenizer.vocab_size):
        kind = (
            TokenType.UNKNOWN
            if sp.is_unknown(i)
            else TokenType.CONTROL
            if sp.is_control(i)
            else TokenType.USER_DEFINED
            if i in specials
            else TokenType.BYTE
            if sp.is_byte(i)
            else TokenType.UNUSED
            if sp.is_unused(i)
            else TokenType.NORMAL
        )
        types.append(int(kind))
    return types


# llama.cpp's simplest block formats, written by the gguf package
GGUF_QUANTIZATIONS = ("Q8_0", "Q4_0")


def save_gguf(
    model: Transformer,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    name: str = "foundry-llm",
    quantization: str | None = None,
) -> Path:
    """Write a GGUF file (architecture "llama") that llama.cpp runs: weights,
    hyperparameters, tokenizer.

    The tokenizer is stored as SentencePiece pieces with their scores and kinds. We
    train it without SentencePiece's dummy space prefix, so add_space_prefix is false,
    and no <s> is added, as in training. <|im_end|> is marked as the end of a turn and
    the ChatML template is included, for llama.cpp's chat mode. The file appears under
    its final name only when complete (temporary file + rename).

    `quantization` "Q8_0" or "Q4_0" stores the weight matrices in llama.cpp's own block
    formats: blocks of 32 weights with one float16 scale each (8 or 4 bits per weight,
    symmetric), as `llama-quantize` would; norm gains stay float32.
    """
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "GGUF export needs the gguf package: pip install gguf"
        ) from None
    if quantization not in (None, *GGUF_QUANTIZATIONS):
        raise ValueError(
            f"GGUF quantization {quantization!r} is not offered: choose one of "
            f"{', '.join(GGUF_QUANTIZATIONS)}, or None for {dtype}"
        )
    tokenizer.check_compatible(model.config.vocab_size)
    tensors = gguf_tensors(model, torch.float32 if quantization else dtype)
    odd = [
        f"{name} (rows of {a.shape[1]})"
        for name, a in tensors.items()
        if quantization and a.ndim == 2 and a.shape[1] % 32
    ]
    if odd:
        raise ValueError(
            f"{quantization} stores blocks of 32 weights, "
            f"which do not divide {', '.join(odd)}"
        )

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, "llama")
        try:
            _fill_gguf(
                writer, model.config, tokenizer, tensors, dtype, name, quantization
            )
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    return atomic_write(path, write)


def _fill_gguf(
    writer,
    config: ModelConfig,
    tokenizer: Tokenizer,
    tensors: dict[str, np.ndarray],
    dtype: torch.dtype,
    name: str,
    quantization: str | None = None,
) -> None:
    """The metadata llama.cpp's Llama loader reads, the tokenizer, and the tensors."""
    from gguf import GGMLQuantizationType, LlamaFileType, quants

    writer.add_name(name)
    file_type = (
        LlamaFileType[f"MOSTLY_{quantization}"]
        if quantization
        else LlamaFileType.ALL_F32
        if dtype == torch.float32
        else LlamaFileType.MOSTLY_F16
    )
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.d_ff)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    _add_tokenizer(writer, tokenizer)
    for tensor_name, array in tensors.items():
        if quantization and array.ndim == 2:
            qtype = GGMLQuantizationType[quantization]
            writer.add_tensor(
                tensor_name, quants.quantize(array, qtype), raw_dtype=qtype
            )
        else:
            writer.add_tensor(tensor_name, array)


def _add_tokenizer(writer, tokenizer: Tokenizer) -> None:
    sp = tokenizer.sp
    # llama.cpp's name for a SentencePiece vocabulary
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i) for i in range(tokenizer.vocab_size)])
    writer.add_token_scores([sp.get_score(i) for i in range(tokenizer.vocab_size)])
    writer.add_token_types(gguf_token_types(tokenizer))
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_unk_token_id(tokenizer.unk_id)
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    end_of_turn = tokenizer.special_token_ids().get("<|im_end|>")
    # a chat model's answer ends here: llama.cpp stops generating on it
    if end_of_turn is not None:
        writer.add_eot_token_id(end_of_turn)
        writer.add_chat_template(CHATML_JINJA)
