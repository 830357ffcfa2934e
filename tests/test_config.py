"""ModelConfig / TrainConfig: valid configs count correctly, invalid ones fail clearly.

An invalid config fails with one actionable line.
"""

import pytest

from foundry_core import ModelConfig, TrainConfig, check_compatible, swiglu_hidden


def one_line_error(factory, **kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        factory(**kwargs)
    message = str(caught.value)
    assert "\n" not in message and message, message
    return message


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (
            dict(d_model=250, n_heads=8),
            "d_model (250) must be divisible by n_heads (8): use d_model=248 or 256",
        ),
        (dict(n_heads=8, n_kv_heads=3), "choose n_kv_heads from [1, 2, 4, 8]"),
        (dict(n_heads=4, n_kv_heads=8), "must be a multiple of n_kv_heads"),
        (dict(d_model=96, n_heads=32, n_kv_heads=4), "is odd, but RoPE rotates pairs"),
        (dict(vocab_size=0), "vocab_size must be a positive integer, got 0"),
        (dict(n_layers=2.5), "n_layers must be a positive integer"),
        (dict(n_layers=True), "n_layers must be a positive integer"),
        (dict(dropout=1.0), "dropout must be in [0, 1)"),
        (dict(rope_base=0.5), "rope_base must be > 1"),
    ],
)
def test_invalid_model_config(kwargs, expected):
    assert expected in one_line_error(ModelConfig, **kwargs)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(lr=0), "lr must be positive"),
        (dict(lr=1e-3, min_lr=1e-2), "min_lr (0.01) must lie between 0 and lr (0.001)"),
        (
            dict(max_steps=100, warmup_steps=100),
            "warmup_steps (100) must be >= 0 and smaller than max_steps (100)",
        ),
        (dict(beta2=1.0), "beta2 must be in [0, 1)"),
        (dict(grad_clip=-1), "grad_clip must be >= 0"),
        (
            dict(dtype="fp8"),
            "dtype 'fp8' is not one of auto, float32, bfloat16, float16",
        ),
        (dict(seed=-1), "seed must be a non-negative integer"),
    ],
)
def test_invalid_train_config(kwargs, expected):
    assert expected in one_line_error(TrainConfig, **kwargs)


def test_unknown_field_suggests_the_right_name():
    message = one_line_error(ModelConfig.from_dict, values={"d_modle": 128})
    assert message == "unknown field 'd_modle' for ModelConfig; did you mean 'd_model'?"


def test_round_trip_through_dict():
    cfg = ModelConfig(
        d_model=128, n_heads=4, n_kv_heads=1, d_ff=352, tie_embeddings=False
    )
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_seq_len_must_fit_the_model():
    with pytest.raises(
        ValueError, match=r"seq_len \(512\) exceeds ModelConfig.max_seq_len \(256\)"
    ):
        check_compatible(ModelConfig(max_seq_len=256), TrainConfig(seq_len=512))


def test_param_counts_by_hand():
    # d=64, 4 heads of 16, 2 kv heads -> kv width 32; SwiGLU width 176;
    # vocab 100; 2 layers; tied.
    cfg = ModelConfig(
        vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=176
    )
    counts = cfg.param_counts()
    assert counts["embedding"] == 100 * 64
    assert counts["attention"] == 2 * (64 * 64 * 2 + 64 * 32 * 2)
    assert counts["mlp"] == 2 * 3 * 64 * 176
    assert counts["norms"] == 2 * 2 * 64 + 64
    assert counts["lm_head"] == 0
    untied = ModelConfig(**{**cfg.to_dict(), "tie_embeddings": False})
    assert untied.num_params() - cfg.num_params() == 100 * 64
    assert cfg.num_params(non_embedding=True) == cfg.num_params() - 100 * 64


def test_gqa_shrinks_only_key_value_projections():
    mha = ModelConfig(d_model=256, n_heads=8, n_kv_heads=8)
    mqa = ModelConfig(d_model=256, n_heads=8, n_kv_heads=1)
    assert mha.param_counts()["mlp"] == mqa.param_counts()["mlp"]
    per_layer_saving = 2 * 256 * (256 - 32)
    assert mha.num_params() - mqa.num_params() == mha.n_layers * per_layer_saving


def test_flops_per_token():
    cfg = ModelConfig(
        vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=176
    )
    counts = cfg.param_counts()
    matmul = counts["attention"] + counts["mlp"] + 100 * 64
    assert cfg.flops_per_token(seq_len=32) == 6 * matmul + 12 * 2 * 64 * 32
    assert cfg.flops_per_token() == cfg.flops_per_token(cfg.max_seq_len)


def test_swiglu_hidden_matches_llama_rule():
    assert swiglu_hidden(256) == 688  # 8/3 * 256 = 682.7, rounded up to a multiple of 8
    assert swiglu_hidden(4096, multiple_of=256) == 11008  # LLaMA-7B's width


def test_tokens_per_step():
    t = TrainConfig(
        batch_size=4, seq_len=128, grad_accum_steps=3, max_steps=10, warmup_steps=1
    )
    assert t.tokens_per_step == 4 * 128 * 3
    assert t.total_tokens == 10 * t.tokens_per_step
