"""GGUF for llama.cpp: weights, hyperparameters and tokenizer in one file.

llama.cpp (and the tools built on it: Ollama, LM Studio) runs GGUF files on a laptop
CPU. Its tensors have their own names, and its Llama graph pairs RoPE dimensions
differently, so the query and key rows are reordered (see to_gguf_rope_order).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .config import ModelConfig
from .export import to_hf_state_dict
from .fileio import atomic_write
from .hardware import cpu_has_amx
from .hf_files import chat_template_jinja, end_of_turn_id
from .model import Transformer
from .tokenizer import Tokenizer

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


def gguf_tensor_type(
    name: str, names: set[str], quantization: str | None
) -> str | None:
    """The block format of tensor `name` in a file quantized to `quantization`.

    The matrix that makes the logits (output.weight, or token_embd.weight when the
    output is tied to it) stays at 8 bits under Q4_0, as llama-quantize keeps it: at
    Q8_0 when the model's width is not a multiple of 256 (our files then hold exactly
    llama-quantize's blocks: tests/test_llama_cpp.py), else at Q6_K, which the gguf
    package cannot write, so Q8_0 here too. On the cpu preset's chat model, Q4_0 for
    every matrix moved llama.cpp's logits by up to 3.05 from ours in float32, this
    choice by up to 1.54, llama-quantize's Q6_K by up to 1.68 (issue 22)."""
    if quantization is None:
        return None
    output = "output.weight" if "output.weight" in names else "token_embd.weight"
    return "Q8_0" if quantization == "Q4_0" and name == output else quantization


def save_gguf(
    model: Transformer,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    name: str = "foundry-llm",
    quantization: str | None = None,
    context: int | None = None,
    template: str = "chatml",
) -> Path:
    """Write a GGUF file (architecture "llama") that llama.cpp runs: weights,
    hyperparameters, tokenizer.

    The tokenizer is stored as SentencePiece pieces with their scores and kinds. We
    train it without SentencePiece's dummy space prefix, so add_space_prefix is false,
    and no <s> is added, as in training. The chat `template`'s end-of-turn token is
    marked as such and the template is included as Jinja, for llama.cpp's chat mode.
    `context` is the trained sequence length (default the model's max_seq_len). The
    file appears under its final name only when complete (temporary file + rename).

    `quantization` "Q8_0" or "Q4_0" stores the weight matrices in llama.cpp's own block
    formats: blocks of 32 weights with one float16 scale each (8 or 4 bits per weight,
    symmetric); under Q4_0 the output matrix stays Q8_0 (gguf_tensor_type). Norm gains
    stay float32.
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
    _check_blocks(tensors, quantization)

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, "llama")
        try:
            writer.add_name(name)
            writer.add_context_length(context or model.config.max_seq_len)
            _fill_gguf(writer, model.config, tensors, dtype, quantization)
            _add_tokenizer(writer, tokenizer, template)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    return atomic_write(path, write)


def _check_blocks(tensors: dict[str, np.ndarray], quantization: str | None) -> None:
    """Block formats store rows in blocks of 32 weights: every matrix must divide."""
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


def _fill_gguf(
    writer,
    config: ModelConfig,
    tensors: dict[str, np.ndarray],
    dtype: torch.dtype,
    quantization: str | None = None,
) -> None:
    """The hyperparameters llama.cpp's Llama loader reads, and the tensors."""
    from gguf import GGMLQuantizationType, LlamaFileType, quants

    file_type = (
        LlamaFileType[f"MOSTLY_{quantization}"]
        if quantization
        else LlamaFileType.ALL_F32
        if dtype == torch.float32
        else LlamaFileType.MOSTLY_F16
    )
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.d_ff)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    for tensor_name, array in tensors.items():
        kind = gguf_tensor_type(tensor_name, set(tensors), quantization)
        if kind and array.ndim == 2:
            qtype = GGMLQuantizationType[kind]
            writer.add_tensor(
                tensor_name, quants.quantize(array, qtype), raw_dtype=qtype
            )
        else:
            writer.add_tensor(tensor_name, array)


def _add_tokenizer(writer, tokenizer: Tokenizer, template: str) -> None:
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
    # a chat model's answer ends here: llama.cpp stops generating on it
    end_of_turn = end_of_turn_id(tokenizer, template)
    if end_of_turn is not None:
        writer.add_eot_token_id(end_of_turn)
        writer.add_chat_template(chat_template_jinja(template, tokenizer))


def open_in_llama_cpp(path: str | os.PathLike, context: int):
    """The GGUF file loaded in llama-cpp-python (`pip install -e ".[deploy]"`), set up
    to be compared with our model: a float32 KV cache, so that only the weights' format
    differs from ours, and every position's logits kept.

    On CPUs with Intel AMX, llama.cpp's AMX kernels crashed on every Q8_0 and Q4_0 file
    (llama-cpp-python 0.3.36; llama.cpp issue 20824). Loading without its repacked
    weight buffers avoids them, as `--no-repack` does on llama.cpp's command line; the
    binding has no argument for it, so its default model parameters are wrapped while
    this file loads."""
    try:
        import llama_cpp
    except ImportError:
        raise ImportError(
            'running GGUF files needs llama-cpp-python: pip install -e ".[deploy]" '
            "(it compiles llama.cpp, a few minutes)"
        ) from None
    low = llama_cpp.llama_cpp
    default = low.llama_model_default_params

    def params():
        values = default()
        values.use_extra_bufts = not cpu_has_amx()
        return values

    low.llama_model_default_params = params
    try:
        return llama_cpp.Llama(
            str(path),
            n_ctx=context,
            logits_all=True,
            type_k=low.GGML_TYPE_F32,
            type_v=low.GGML_TYPE_F32,
            verbose=False,
        )
    finally:
        low.llama_model_default_params = default
