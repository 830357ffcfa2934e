"""Measured training memory: the analytic estimate holds against a real step.

Activation checkpointing changes memory, not the gradients.
"""

import copy

import pytest
import torch

from foundry_core import ModelConfig, estimate_memory
from foundry_core.hardware import HardwareInfo
from foundry_core.memory import measure_checkpointing, measure_training_memory
from foundry_core.model import Transformer
from foundry_core.presets import PRESETS, with_overrides

# fp32, whatever this machine's CPU can do
CPU = HardwareInfo("cpu", "test CPU", None, bf16=False)


@pytest.mark.parametrize("name, batch_size", [("ci", None), ("cpu", 4)])
def test_estimate_is_within_25_percent_of_the_measured_peak(name, batch_size):
    # The `cpu` preset at batch 4 instead of 16 keeps the test short; the estimate is
    # linear in the batch and the comparison stays real: same model, same sequence
    # length, same loss chunking.
    preset = (
        with_overrides(PRESETS[name], batch_size=batch_size)
        if batch_size
        else PRESETS[name]
    )
    measured = measure_training_memory(preset.model, preset.train, CPU, steps=1)
    estimate = estimate_memory(preset.model, preset.train, CPU)
    # The runtime term (0 on the CPU) is the CUDA context or MPS pools, which no tensor
    # counter sees: the honest comparison is the estimate's tensors with the measured
    # tensors.
    estimated = estimate.total - estimate.runtime
    assert 0.75 <= measured.peak / estimated <= 1.25, measured.compare(estimate)
    activations = estimate.activations + estimate.autocast_copies
    assert 0.75 <= measured.activations / activations <= 1.25, measured.compare(
        estimate
    )


def test_resident_parts_are_counted_exactly():
    preset = PRESETS["ci"]
    measured = measure_training_memory(preset.model, preset.train, CPU, steps=1)
    n = preset.model.num_params()
    rope_tables = 2 * preset.model.max_seq_len * preset.model.head_dim * 4
    assert measured.weights == 4 * n + rope_tables
    # 8 bytes per weight, + a step count per parameter tensor
    assert measured.optimizer == 8 * n + 4 * len(
        list(Transformer(preset.model).parameters())
    )
    # the tied embedding/output matrix has one gradient
    assert measured.gradients == 4 * n
    assert 0 <= measured.gradients_at_peak <= measured.gradients
    assert (
        measured.peak
        == measured.weights
        + measured.optimizer
        + measured.gradients_at_peak
        + measured.activations
    )
    rows = measured.compare(estimate_memory(preset.model, preset.train, CPU))
    assert [r["part"] for r in rows] == [
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "total (peak)",
    ]
    assert (
        measured.step_seconds > 0
        and measured.step_cpu_seconds > 0
        and measured.as_dict()["device"] == "cpu"
    )


def test_checkpointing_trades_time_for_memory():
    preset = PRESETS["ci"]
    result = measure_checkpointing(preset.model, preset.train, CPU, steps=1)
    assert result["on"].peak < result["off"].peak
    assert result["memory_saved"] == result["off"].peak - result["on"].peak > 0
    assert 0 < result["memory_saved_fraction"] < 1
    assert result["time_added"] == pytest.approx(
        result["on"].step_seconds - result["off"].step_seconds
    )
    # no timing asserts: speed lives in benchmarks/
    assert "cpu_time_added_fraction" in result


def test_checkpointing_gives_the_same_gradients():
    config = ModelConfig(
        vocab_size=128,
        d_model=64,
        n_layers=3,
        n_heads=4,
        n_kv_heads=2,
        d_ff=192,
        max_seq_len=32,
        dropout=0.1,  # the recomputation must replay the same masks
    )
    torch.manual_seed(0)
    plain = Transformer(config).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing = True
    ids = torch.randint(
        0, config.vocab_size, (4, 33), generator=torch.Generator().manual_seed(1)
    )
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(2)
        loss = model(ids[:, :-1], ids[:, 1:])[1]
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-8, msg=name)


def test_bad_input_is_a_clear_error():
    preset = PRESETS["ci"]
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        measure_training_memory(preset.model, preset.train, CPU, steps=0)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        measure_training_memory(preset.model, preset.train, "tpu")


def saved_bytes(config: ModelConfig, batch: int, autocast: bool) -> int:
    """Bytes of the distinct tensors autograd saves in one forward pass.

    Weights and buffers are left out.
    """
    torch.manual_seed(0)
    model = Transformer(config).train()
    own = {
        t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]
    }
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, config.vocab_size, (batch, config.max_seq_len + 1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(ids[:, :-1], ids[:, 1:])
    return sum(saved.values())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16 autocast"])
def test_layer_formula_counts_what_autograd_saves(autocast):
    """One more layer and one more sequence add exactly layer_bytes_per_token x seq_len.

    So the estimate's per-layer formula is the real one (weight copies and the loss's
    workspace cancel out).
    """
    from foundry_core.memory import layer_bytes_per_token

    def config(layers: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=256,
            d_model=64,
            n_layers=layers,
            n_heads=4,
            n_kv_heads=2,
            d_ff=192,
            max_seq_len=32,
        )

    per_sequence_layer = (
        saved_bytes(config(2), 2, autocast)
        - saved_bytes(config(1), 2, autocast)
        - saved_bytes(config(2), 1, autocast)
        + saved_bytes(config(1), 1, autocast)
    )
    assert (
        per_sequence_layer
        == layer_bytes_per_token(
            config(1), 2 if autocast else 4, fp32_attention=autocast
        )
        * 32
    )


def test_sharded_memory_divides_one_more_state_per_zero_stage():
    from foundry_core.memory import MemoryEstimate, sharded_memory

    estimate = MemoryEstimate(
        weights=400,
        gradients=400,
        optimizer=800,
        autocast_copies=200,
        activations=1000,
        runtime=100,
    )
    totals = [sharded_memory(estimate, 4, stage)["total"] for stage in range(4)]
    assert totals == [2900, 2300, 2000, 1550]
    assert sharded_memory(estimate, 1, 3)["total"] == estimate.total
    assert all(sharded_memory(estimate, 8, s)["activations"] == 1000 for s in range(4))
    with pytest.raises(ValueError, match="stage"):
        sharded_memory(estimate, 4, 4)
    with pytest.raises(ValueError, match="world_size"):
        sharded_memory(estimate, 0, 1)
