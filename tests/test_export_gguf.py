"""GGUF export, read back: llama.cpp's tensor names and shapes, the RoPE row order.

Also the metadata and the tokenizer.
"""

import numpy as np
import pytest
import torch

from foundry_core import ModelConfig
from foundry_core.gguf_export import (
    from_gguf_rope_order,
    gguf_name,
    gguf_tensor_type,
    save_gguf,
    to_gguf_rope_order,
)
from foundry_core.model import Transformer, apply_rope, rope_tables
from foundry_core.tokenizer import train_tokenizer

gguf = pytest.importorskip("gguf")

TEXT = (
    "Who's there? Stand and unfold yourself. Long live the king!\n"
    "A little more than kin, and less than kind.\n"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer([TEXT * 3], 300, tmp_path_factory.mktemp("tok"))


def make_model(vocab_size: int, **overrides) -> Transformer:
    values = dict(
        vocab_size=vocab_size,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=48,
        max_seq_len=64,
        rope_base=500000.0,
        norm_eps=1e-6,
    )
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**values, **overrides}))
    for block in model.layers:  # distinct gains, so a swapped norm would be caught
        torch.nn.init.normal_(block.input_layernorm.weight)
    return model


def field(reader, key: str):
    return reader.fields[key].contents()


def interleaved_rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """llama.cpp's Llama RoPE: dimensions 2i and 2i + 1 turn together.

    They turn at frequency base^(-2i/d).
    """
    seq, dim = x.shape[-2:]
    angles = torch.outer(
        torch.arange(seq, dtype=torch.float32), base ** (-torch.arange(0, dim, 2) / dim)
    )
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack(
        (even * cos - odd * sin, even * sin + odd * cos), dim=-1
    ).flatten(-2)


def test_rope_reordering_is_undone_and_turns_our_rope_into_llama_cpp_s():
    n_heads, head_dim, d_model = 3, 8, 12
    weight = torch.randn(n_heads * head_dim, d_model)
    reordered = to_gguf_rope_order(weight, n_heads)
    assert torch.equal(from_gguf_rope_order(reordered, n_heads), weight)
    assert not torch.equal(reordered, weight)
    x = torch.randn(5, d_model)
    cos, sin = rope_tables(head_dim, 5, 10000.0)
    ours = apply_rope(
        (x @ weight.T).view(5, n_heads, head_dim).transpose(0, 1), cos, sin
    )
    theirs = interleaved_rope(
        (x @ reordered.T).view(5, n_heads, head_dim).transpose(0, 1), 10000.0
    )
    # the same rotated numbers, only in llama.cpp's order within each head
    back = from_gguf_rope_order(theirs.transpose(0, 1).reshape(5, -1).T, n_heads).T
    assert torch.allclose(back, ours.transpose(0, 1).reshape(5, -1), atol=1e-5)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gguf_file_holds_the_model(tmp_path, tokenizer, tie):
    model = make_model(tokenizer.vocab_size, tie_embeddings=tie)
    path = save_gguf(model, tokenizer, tmp_path / "model.gguf")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    expected = {
        gguf_name(k) for k in model.state_dict() if not (tie and k == "lm_head.weight")
    }
    assert set(tensors) == expected and ("output.weight" in tensors) == (not tie)
    assert {
        "token_embd.weight",
        "blk.1.attn_q.weight",
        "blk.0.ffn_down.weight",
        "output_norm.weight",
    } <= expected
    config = model.config
    for name, param in model.state_dict().items():
        if tie and name == "lm_head.weight":
            continue
        t = tensors[gguf_name(name)]
        # GGUF lists dimensions fastest first
        assert tuple(t.shape) == tuple(reversed(param.shape))
        values = torch.from_numpy(np.array(t.data))
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            values = from_gguf_rope_order(
                values, config.n_heads if "q_proj" in name else config.n_kv_heads
            )
        assert values.shape == param.shape and torch.equal(values, param), name
    assert tensors["token_embd.weight"].shape.tolist() == [
        config.d_model,
        config.vocab_size,
    ]
    assert field(reader, "general.architecture") == "llama"
    metadata = {
        "context_length": 64,
        "embedding_length": 32,
        "block_count": 2,
        "feed_forward_length": 48,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "rope.dimension_count": 8,
    }
    for key, value in metadata.items():
        assert field(reader, f"llama.{key}") == value, key
    assert field(reader, "llama.rope.freq_base") == 500000.0
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(
        1e-6
    )
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_gguf_tokenizer_matches_ours(tmp_path, tokenizer):
    reader = gguf.GGUFReader(
        save_gguf(make_model(tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf")
    )
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    assert field(reader, "tokenizer.ggml.model") == "llama"
    assert field(reader, "tokenizer.ggml.tokens") == pieces
    scores = [tokenizer.sp.get_score(i) for i in range(len(pieces))]
    assert field(reader, "tokenizer.ggml.scores") == pytest.approx(scores)
    types = field(reader, "tokenizer.ggml.token_type")
    kinds = gguf.TokenType
    # <pad> <unk> <s> </s>
    assert types[:4] == [kinds.CONTROL, kinds.UNKNOWN, kinds.CONTROL, kinds.CONTROL]
    assert [
        types[tokenizer.piece_to_id(p)] for p in ("<|im_start|>", "<|im_end|>")
    ] == [kinds.USER_DEFINED] * 2
    assert (
        types[tokenizer.piece_to_id("<0x0A>")] == kinds.BYTE
        and types[-1] == kinds.NORMAL
    )
    ids = {
        key: field(reader, f"tokenizer.ggml.{key}_token_id")
        for key in ("bos", "eos", "unknown", "padding")
    }
    assert ids == {"bos": 2, "eos": 3, "unknown": 1, "padding": 0}
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert field(reader, "tokenizer.ggml.add_space_prefix") is False
    assert field(reader, "tokenizer.ggml.eot_token_id") == tokenizer.piece_to_id(
        "<|im_end|>"
    )
    assert "<|im_start|>" in field(reader, "tokenizer.chat_template")


def test_float16_export_and_bad_input(tmp_path, tokenizer):
    model = make_model(tokenizer.vocab_size)
    reader = gguf.GGUFReader(
        save_gguf(model, tokenizer, tmp_path / "half.gguf", dtype=torch.float16)
    )
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert (
        tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    )
    assert np.allclose(
        tensors["blk.0.ffn_up.weight"].data,
        model.layers[0].mlp.up_proj.weight.detach(),
        atol=1e-3,
    )
    with pytest.raises(ValueError, match="float32 or float16"):
        save_gguf(model, tokenizer, tmp_path / "b.gguf", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="tokenizer has"):
        save_gguf(make_model(tokenizer.vocab_size + 1), tokenizer, tmp_path / "c.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.gguf"]


def test_transformers_reads_the_file_back_to_our_logits(tmp_path, tokenizer):
    """An independent reader: transformers' GGUF loader.

    It undoes llama.cpp's query/key order on its own.
    """
    transformers = pytest.importorskip("transformers")
    loader = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    model = make_model(tokenizer.vocab_size, tie_embeddings=False).eval()
    with torch.no_grad():
        # sharp attention: a wrong RoPE pairing would change the logits clearly
        for block in model.layers:
            block.self_attn.q_proj.weight *= 10
            block.self_attn.k_proj.weight *= 10
    path = save_gguf(model, tokenizer, tmp_path / "m.gguf")
    theirs = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**loader.load_gguf_checkpoint(path)["config"])
    )
    theirs.load_state_dict(
        loader.load_gguf_checkpoint(path, return_tensors=True, model_to_load=theirs)[
            "tensors"
        ]
    )
    ids = torch.tensor([tokenizer.encode(TEXT)[:40]])
    with torch.no_grad():
        assert (theirs.eval()(ids).logits - model(ids)[0]).abs().max() <= 1e-4


@pytest.mark.parametrize("quantization,bits", [("Q8_0", 8), ("Q4_0", 4)])
def test_quantized_gguf_is_smaller_and_reads_back_close(
    tmp_path, tokenizer, quantization, bits
):
    model = make_model(tokenizer.vocab_size, d_ff=64).eval()
    full = save_gguf(model, tokenizer, tmp_path / "f32.gguf")
    small = save_gguf(
        model, tokenizer, tmp_path / f"{quantization}.gguf", quantization=quantization
    )
    reader = gguf.GGUFReader(small)
    kind = gguf.GGMLQuantizationType[quantization]
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == kind
    # the tied token matrix makes the logits: llama-quantize keeps it at 8 bits
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert (
        tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    )
    up = gguf.quants.dequantize(tensors["blk.0.ffn_up.weight"].data, kind)
    weight = model.layers[0].mlp.up_proj.weight.detach().numpy()
    assert up.shape == weight.shape
    # symmetric blocks of 32 with a float16 scale. Q8_0: half a step, plus the scale's
    # float16 rounding (2^-11 relative, times up to 127 steps). Q4_0 maps the block's
    # signed extreme to -8, so the other side can clip at +7: up to one step.
    step = np.abs(weight.reshape(weight.shape[0], -1, 32)).max(axis=-1) / (
        127 if bits == 8 else 8
    )
    error = np.abs(up - weight).reshape(weight.shape[0], -1, 32)
    assert (
        error <= step[..., None] * (0.57 if bits == 8 else 1.0) + 1e-6
    ).all() and error.max() > 0
    blocks = sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.dim() == 2 and "embed" not in n
    )
    embedding = model.embed_tokens.weight.numel()
    # bytes saved per weight: the blocks at `bits`, the token matrix at 8
    saved = (full.stat().st_size - small.stat().st_size) - embedding * (4 - 8.5 / 8)
    assert abs(saved / blocks - (4 - (bits + 16 / 32) / 8)) < 0.05, saved / blocks
    with pytest.raises(ValueError, match="not offered"):
        save_gguf(model, tokenizer, tmp_path / "x.gguf", quantization="Q2_K")
    with pytest.raises(ValueError, match="ffn_down.weight \\(rows of 48\\)"):
        save_gguf(
            make_model(tokenizer.vocab_size),
            tokenizer,
            tmp_path / "y.gguf",
            quantization=quantization,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["f32.gguf", f"{quantization}.gguf"]
    )


def test_q4_0_keeps_the_logits_matrix_at_8_bits():
    names = {"token_embd.weight", "output.weight", "blk.0.ffn_up.weight"}
    assert gguf_tensor_type("output.weight", names, "Q4_0") == "Q8_0"
    assert gguf_tensor_type("token_embd.weight", names, "Q4_0") == "Q4_0"
    tied = names - {"output.weight"}  # the embedding makes the logits too
    assert gguf_tensor_type("token_embd.weight", tied, "Q4_0") == "Q8_0"
    assert gguf_tensor_type("token_embd.weight", tied, "Q8_0") == "Q8_0"
    assert gguf_tensor_type("blk.0.ffn_up.weight", tied, "Q4_0") == "Q4_0"
    assert gguf_tensor_type("blk.0.ffn_up.weight", tied, None) is None
