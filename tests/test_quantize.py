"""Weight-only quantization: errors within half a step and real 4-bit packing.

Also smaller models whose logits stay close, exact save/load round-trips, and clear
errors for bad requests.
"""

import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from foundry_core import ModelConfig
from foundry_core.model import Transformer
from foundry_core.quantize import (
    QuantLinear,
    dequantize_int4,
    dequantize_int8,
    fitting_group_sizes,
    layer_errors,
    linear_size_bytes,
    load_quantized,
    model_size_bytes,
    pack_int4,
    quantization_error,
    quantize_model,
    quantize_tensor_int4,
    quantize_tensor_int8,
    save_quantized,
    torch_dynamic_int8,
    unpack_int4,
)

CONFIG = ModelConfig(
    vocab_size=64,
    d_model=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=128,
    max_seq_len=32,
)
BLOCK_LINEARS = 7 * CONFIG.n_layers  # q, k, v, o, gate, up, down per block


@pytest.fixture(scope="module")
def float_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CONFIG).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(
        0, CONFIG.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1)
    )


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def random_weight(rows: int = 48, cols: int = 128) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(2))
    w[3] *= 50  # an outlier row: per-row scales keep it from coarsening the others
    # an all-positive group: the zero point must still place 0 on the grid
    w[5, :16] += 3.0
    w[7] = 0.0  # an all-zero row must not divide by zero
    return w


def test_int8_error_is_at_most_half_a_step_per_row():
    w = random_weight()
    q, scales = quantize_tensor_int8(w)
    assert q.dtype == torch.int8 and scales.shape == (w.shape[0],)
    assert int(q.min()) >= -127 and int(q.max()) <= 127
    nonzero = w.abs().amax(dim=1) > 0
    assert (q.abs().amax(dim=1)[nonzero] == 127).all(), (
        "each row's largest weight should use the full range"
    )
    error = (dequantize_int8(q, scales) - w).abs()
    assert (error <= scales[:, None] / 2 * (1 + 1e-5)).all()
    assert error.max() > 0.1 * scales.min(), (
        "suspiciously exact: is anything being quantized?"
    )
    assert torch.equal(dequantize_int8(q, scales)[7], torch.zeros(w.shape[1]))


@pytest.mark.parametrize("group_size", [16, 32, 64])
def test_int4_error_is_at_most_half_a_step_per_group(group_size):
    w = random_weight()
    packed, scales, zeros = quantize_tensor_int4(w, group_size)
    n_groups = w.shape[1] // group_size
    assert packed.dtype == torch.uint8 and packed.shape == (w.shape[0], w.shape[1] // 2)
    assert (
        scales.shape == zeros.shape == (w.shape[0], n_groups) and int(zeros.max()) <= 15
    )
    error = (dequantize_int4(packed, scales, zeros, w.shape[1]) - w).abs()
    step = scales.repeat_interleave(group_size, dim=1)
    assert (error <= step / 2 * (1 + 1e-5)).all()
    assert error.max() > 0.1 * scales.min()


@pytest.mark.parametrize(
    "scheme,group_size", [("int8", 32), ("int4", 32), ("int4", 64)]
)
def test_quantization_error_reports_the_real_error_and_its_step(scheme, group_size):
    w = random_weight()
    error, step = quantization_error(w, scheme, group_size)
    assert error.shape == step.shape == w.shape
    assert (error.abs() <= step / 2 * (1 + 1e-5)).all()
    assert (error.abs() / step).max() > 0.4, (
        "rounding errors should reach close to half a step"
    )
    linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
    linear.weight.data = w.clone()
    assert torch.allclose(
        QuantLinear.from_linear(linear, scheme, group_size).weight - w, error, atol=1e-6
    ), "the layer and the error analysis must quantize alike"


def test_layer_errors_cover_every_block_linear_and_grow_with_fewer_bits(float_model):
    before = copy.deepcopy(float_model.state_dict())
    int8, int4 = (
        layer_errors(float_model, "int8"),
        layer_errors(float_model, "int4", 32),
    )
    assert len(int8) == len(int4) == BLOCK_LINEARS and "lm_head" not in int8
    assert all(0 < int8[name] < int4[name] < 0.5 for name in int8), (int8, int4)
    assert all(
        torch.equal(before[k], v) for k, v in float_model.state_dict().items()
    ), "model changed"


def test_fitting_group_sizes_divide_every_layer():
    config = ModelConfig(
        vocab_size=64,
        d_model=64,
        n_layers=1,
        n_heads=4,
        n_kv_heads=2,
        d_ff=96,
        max_seq_len=16,
    )
    # 64 and 128 do not divide d_ff = 96
    assert fitting_group_sizes(Transformer(config)) == [32]
    assert fitting_group_sizes(Transformer(CONFIG), (16, 32, 64, 128)) == [16, 32, 64]


def test_pack_unpack_round_trips_every_value_and_odd_lengths():
    # all 256 (low, high)
    pairs = torch.cartesian_prod(torch.arange(16), torch.arange(16)).to(torch.uint8)
    packed = pack_int4(pairs)
    assert packed.shape == (256, 1) and packed.dtype == torch.uint8
    assert sorted(packed.flatten().tolist()) == list(range(256)), (
        "each byte holds exactly two nibbles"
    )
    assert torch.equal(unpack_int4(packed), pairs)
    values = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(
        pack_int4(values),
        torch.tensor([16 * (i + 1) + i for i in range(0, 16, 2)], dtype=torch.uint8),
    )
    odd = torch.tensor([[1, 15, 7], [0, 3, 9]])
    assert pack_int4(odd).shape == (2, 2)
    assert torch.equal(unpack_int4(pack_int4(odd), length=3), odd.to(torch.uint8))
    with pytest.raises(ValueError, match=r"values in \[0, 15\], got \[0, 16\]"):
        pack_int4(torch.tensor([0, 16]))
    with pytest.raises(ValueError, match="integer tensor"):
        pack_int4(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="not 7"):
        unpack_int4(pack_int4(odd), length=7)


@pytest.mark.parametrize("scheme, group_size", [("int8", None), ("int4", 16)])
def test_quant_linear_forward_is_f_linear_of_its_dequantized_weight(scheme, group_size):
    torch.manual_seed(3)
    linear = nn.Linear(48, 24)
    layer = QuantLinear.from_linear(linear, scheme, group_size)
    x = torch.randn(2, 5, 48)
    assert torch.equal(layer(x), F.linear(x, layer.dequantize(), layer.bias))
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    assert (layer.dequantize() - linear.weight).abs().max() < 0.02
    buffers = (
        {"int8": 24 * 48 + 24 * 4, "int4": 24 * 24 + 24 * 3 * (4 + 1)}[scheme]
        + 24 * 4  # fp32 bias
    )
    assert layer.nbytes == buffers and not list(layer.parameters())


def test_quantized_logits_stay_close_and_layers_shrink(float_model, ids):
    reference = logits(float_model, ids)
    int8 = quantize_model(copy.deepcopy(float_model), "int8")
    int4 = quantize_model(copy.deepcopy(float_model), "int4", group_size=32)
    err8, err4 = (
        relative_error(logits(int8, ids), reference),
        relative_error(logits(int4, ids), reference),
    )
    assert err8 < 0.01, err8
    assert err8 < err4 < 0.1, err4
    for model in (int8, int4):
        assert sum(isinstance(m, QuantLinear) for m in model.modules()) == BLOCK_LINEARS
        assert (
            isinstance(model.lm_head, nn.Linear)
            and model.lm_head.weight is model.embed_tokens.weight
        )
    fp32_bytes = linear_size_bytes(float_model)
    assert fp32_bytes / linear_size_bytes(int8) >= 3.5
    assert fp32_bytes / linear_size_bytes(int4) >= 5
    buffers = sum(b.nbytes for b in float_model.buffers())
    # tied matrix once
    assert model_size_bytes(float_model) == 4 * float_model.num_params() + buffers
    assert (
        model_size_bytes(int4) < model_size_bytes(int8) < model_size_bytes(float_model)
    )


def test_quantized_lm_head_still_gives_a_loss(float_model, ids):
    model = quantize_model(copy.deepcopy(float_model), "int8", skip=())
    assert isinstance(model.lm_head, QuantLinear)
    with torch.no_grad():
        loss, reference = model(ids, ids)[1], float_model(ids, ids)[1]
    assert torch.isfinite(loss) and abs(float(loss) - float(reference)) < 0.01


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_save_load_gives_identical_logits(tmp_path, float_model, ids, scheme):
    model = quantize_model(copy.deepcopy(float_model), scheme, group_size=32)
    save_quantized(model, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "quantization.json").read_text())
    assert meta["scheme"] == scheme and len(meta["quantized"]) == BLOCK_LINEARS
    assert meta["model_config"] == CONFIG.to_dict()
    back = load_quantized(tmp_path / "q")
    assert torch.equal(logits(back, ids), logits(model, ids))
    assert model_size_bytes(back) == model_size_bytes(model)
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_loading_into_another_config_names_the_mismatch(tmp_path, float_model):
    save_quantized(quantize_model(copy.deepcopy(float_model), "int8"), tmp_path)
    other = ModelConfig.from_dict({**CONFIG.to_dict(), "d_model": 128, "d_ff": 256})
    with pytest.raises(
        ValueError, match=r"d_model=128 \(saved: 64\), d_ff=256 \(saved: 128\)"
    ):
        load_quantized(tmp_path, other)
    with pytest.raises(FileNotFoundError, match="quantization.json"):
        load_quantized(tmp_path / "nowhere")


def test_bad_requests_are_clear_errors(float_model):
    model = copy.deepcopy(float_model)
    with pytest.raises(ValueError, match="unknown scheme 'int3'"):
        quantize_model(model, "int3")
    with pytest.raises(
        ValueError,
        match=r"group_size 48 does not divide in_features=64 of "
        r"layers\.0\.self_attn\.q_proj",
    ):
        quantize_model(model, "int4", group_size=48)
    assert not any(isinstance(m, QuantLinear) for m in model.modules()), (
        "a failed call must change nothing"
    )
    quantize_model(model, "int8")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, "int4")


def test_torch_dynamic_int8_reference_is_close(float_model, ids):
    try:
        reference = torch_dynamic_int8(float_model)
    except RuntimeError as err:
        pytest.skip(str(err))
    assert isinstance(float_model.layers[0].mlp.up_proj, nn.Linear), (
        "the original must stay untouched"
    )
    assert relative_error(logits(reference, ids), logits(float_model, ids)) < 0.05
    ratio = linear_size_bytes(float_model) / linear_size_bytes(reference)
    assert 3.9 < ratio < 4.0, (
        f"torch's int8 layers should count ~1 byte per weight, got {ratio:.2f}x"
    )
    assert model_size_bytes(reference) < model_size_bytes(float_model)


def test_cast_weights_halves_the_parameters_and_keeps_the_original(float_model, ids):
    from foundry_core.quantize import cast_weights

    half = cast_weights(float_model, torch.bfloat16)
    assert float_model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    assert linear_size_bytes(half) * 2 == linear_size_bytes(float_model)
    assert relative_error(logits(half, ids).float(), logits(float_model, ids)) < 0.05
