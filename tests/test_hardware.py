"""Device detection, precision rules and the analytic memory estimate."""

import pytest
import torch

from foundry_core import (
    HardwareInfo,
    ModelConfig,
    TrainConfig,
    choose_precision,
    detect,
    estimate_memory,
    hardware,
)
from foundry_core.hardware import GIB, measure_matmul_tflops, mps_notes, prepare_device
from foundry_core.losses import CHUNK_ELEMENTS, GPU_CHUNK_ELEMENTS
from foundry_core.memory import activation_bytes_per_token, loss_workspace_bytes

CUDA_AMPERE = HardwareInfo("cuda", "A100", 80 * GIB, bf16=True)
CUDA_TURING = HardwareInfo("cuda", "T4", 15 * GIB, bf16=False)
MAC = HardwareInfo("mps", "Apple M4 Pro", 32 * GIB, bf16=False)
CPU = HardwareInfo("cpu", "AVX2 CPU", 16 * GIB, bf16=False)
CPU_AMX = HardwareInfo("cpu", "Xeon with AMX", 64 * GIB, bf16=True)


def test_detect_describes_this_machine():
    info = detect()
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert info.device == expected
    assert info.name and info.cpu_cores >= 1
    assert info.memory_bytes is None or info.memory_bytes > 0
    assert info.device in str(info)


def test_device_can_be_forced_to_cpu(monkeypatch):
    monkeypatch.setenv("FOUNDRY_DEVICE", "cpu")
    assert detect().device == "cpu"


def test_unknown_or_missing_device_is_a_clear_error(monkeypatch):
    with pytest.raises(
        ValueError, match="unknown device 'tpu': use one of cuda, mps, cpu"
    ):
        detect("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match="device 'cuda' is not available here; available: .*cpu"
        ):
            detect("cuda")


@pytest.mark.parametrize(
    "info, dtype, autocast, scaler",
    [
        (CUDA_AMPERE, "bfloat16", True, False),
        (CUDA_TURING, "float16", True, True),
        (MAC, "float32", False, False),
        (CPU, "float32", False, False),
        (CPU_AMX, "bfloat16", True, False),
    ],
)
def test_auto_precision(info, dtype, autocast, scaler):
    p = choose_precision(info)
    assert (p.dtype, p.autocast, p.grad_scaler) == (dtype, autocast, scaler)
    assert p.torch_dtype == getattr(torch, dtype)


def test_explicit_precision_is_checked_against_the_device():
    assert choose_precision(CUDA_AMPERE, "float32").dtype == "float32"
    assert choose_precision(CUDA_AMPERE, "float16").grad_scaler
    with pytest.raises(
        ValueError, match="bfloat16 is not supported at useful speed on cuda"
    ):
        choose_precision(CUDA_TURING, "bfloat16")
    with pytest.raises(ValueError, match="float16 training needs CUDA"):
        choose_precision(MAC, "float16")
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        choose_precision(CPU, "int8")


def test_matmul_throughput_is_measured():
    assert measure_matmul_tflops("cpu", size=128, seconds=0.05) > 0


MODEL = ModelConfig(
    vocab_size=1000,
    d_model=128,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    d_ff=352,
    max_seq_len=128,
)
TRAIN = TrainConfig(batch_size=8, seq_len=128)


def test_optimizer_state_is_sixteen_bytes_per_parameter():
    est = estimate_memory(MODEL, TRAIN, CPU)
    n = MODEL.num_params()
    assert (est.weights, est.gradients, est.optimizer) == (4 * n, 4 * n, 8 * n)
    assert est.autocast_copies == 0 and est.runtime == 0
    assert est.total == sum(
        (est.weights, est.gradients, est.optimizer, est.activations)
    )


def test_activations_scale_with_batch_and_shrink_with_checkpointing():
    base = estimate_memory(MODEL, TRAIN, CPU).activations
    double = estimate_memory(
        MODEL, TrainConfig(batch_size=16, seq_len=128), CPU
    ).activations
    per_token_part = base - loss_workspace_bytes(MODEL, 8 * 128)
    assert per_token_part == 8 * 128 * activation_bytes_per_token(MODEL, 4)
    # linear in the batch
    assert double - loss_workspace_bytes(MODEL, 16 * 128) == 2 * per_token_part
    ckpt = estimate_memory(
        MODEL, TrainConfig(batch_size=8, seq_len=128, grad_checkpointing=True), CPU
    ).activations
    assert ckpt < base / 2


def test_loss_workspace_is_one_chunk_of_logits_plus_the_output_gradient():
    tokens = 4096
    assert (
        loss_workspace_bytes(MODEL, tokens)
        == 1000 * 128 * 4 + min(tokens, CHUNK_ELEMENTS // 1000) * 1000 * 10
    )
    # never more rows than tokens
    assert loss_workspace_bytes(MODEL, 8) == 1000 * 128 * 4 + 8 * 1000 * 10
    # a GPU takes larger chunks: fewer kernel launches
    tokens = 1 << 16
    for device in ("cuda", "mps"):
        assert loss_workspace_bytes(MODEL, tokens, device) == (
            1000 * 128 * 4 + min(tokens, GPU_CHUNK_ELEMENTS // 1000) * 1000 * 10
        )
    assert GPU_CHUNK_ELEMENTS // 1000 > CHUNK_ELEMENTS // 1000


def test_autocast_halves_matmul_activations_and_adds_weight_copies():
    fp32 = estimate_memory(MODEL, TRAIN, CPU)
    bf16 = estimate_memory(MODEL, TRAIN, CPU_AMX)
    assert bf16.autocast_copies == 2 * (
        MODEL.num_params() - MODEL.param_counts()["norms"]
    )
    assert bf16.activations < fp32.activations
    assert bf16.runtime == 0 and estimate_memory(MODEL, TRAIN, CUDA_AMPERE).runtime > 0


def test_math_attention_on_mps_stores_scores():
    per_token = activation_bytes_per_token(MODEL, 4)
    with_scores = activation_bytes_per_token(
        MODEL, 4, attention_scores=True, seq_len=128
    )
    assert with_scores - per_token == MODEL.n_layers * 2 * MODEL.n_heads * 128 * 4


def test_hypothetical_device_by_name():
    assert estimate_memory(MODEL, TRAIN, "cuda").autocast_copies > 0
    with pytest.raises(ValueError, match="unknown device 'xpu'"):
        estimate_memory(MODEL, TRAIN, "xpu")


MAC_CLAIMING_BF16 = HardwareInfo("mps", "Apple M4 Pro", 32 * GIB, bf16=True)


def test_mps_trains_in_fp32_unless_bf16_is_asked_for():
    p = choose_precision(MAC_CLAIMING_BF16)
    assert (p.dtype, p.autocast, p.grad_scaler) == ("float32", False, False)
    assert (
        choose_precision(
            PRESET_M4PRO := HardwareInfo("mps", "M4 Pro", 32 * GIB, bf16=False)
        ).dtype
        == "float32"
    )
    assert estimate_memory(MODEL, TRAIN, PRESET_M4PRO).autocast_copies == 0


def test_mps_notes_say_what_happens_to_unsupported_operations():
    (note,) = mps_notes(fallback=True, matmul_precision="highest")
    assert "runs on the CPU" in note and "PYTORCH_ENABLE_MPS_FALLBACK=1" in note
    notes = mps_notes(fallback=False, matmul_precision="high")
    assert "NotImplementedError" in notes[0] and "'highest'" in notes[1]


def test_prepare_device_keeps_fp32_matmuls_exact_on_mps_and_notes_once(
    monkeypatch, capsys
):
    monkeypatch.setattr(hardware, "_noted", set())
    before = torch.get_float32_matmul_precision()
    try:
        # what a TF32-minded notebook might have set
        torch.set_float32_matmul_precision("high")
        prepare_device(CPU)
        # nothing is changed off MPS
        assert torch.get_float32_matmul_precision() == "high"
        prepare_device(MAC)
        assert torch.get_float32_matmul_precision() == "highest"
        first = capsys.readouterr().out
        prepare_device(MAC)
        # each note once per process
        assert "MPS:" in first and capsys.readouterr().out == ""
    finally:
        torch.set_float32_matmul_precision(before)
