"""The named presets: one whole recipe per kind of machine.

Each is sized for its target (see `Preset.fits` and `Preset.estimate_seconds`, which
compute memory and time from the configs). The `ci` preset is the tiny one the tests and
FOUNDRY_FAST=1 use; `cpu` is the default. presets.py picks one for the machine at hand.
The GPU presets pretrain on TinyStories as well as Shakespeare when it can be fetched
(data/stream.py): Shakespeare alone is too little text for models of their size.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .config import ModelConfig, TrainConfig
from .hardware import GIB, HardwareInfo
from .recipe import Preset
from .settings import STAGES, AlignSettings, DataSettings, EvalSettings, QuantSettings


def post_training(
    model: ModelConfig, train: TrainConfig, **changes: Any
) -> AlignSettings:
    """The usual post-training recipe for a pretraining run: short runs on 128-token
    chats, at learning rates below pretraining's (SFT half, reward model a quarter, DPO
    a fifth: each stage starts from a trained model that a large step would undo).
    Seeds and precision follow the pretraining run."""
    lr = train.lr
    common = dict(
        seq_len=min(128, model.max_seq_len),
        warmup_steps=10,
        weight_decay=0.0,
        eval_steps=4,
        seed=train.seed,
        dtype=train.dtype,
    )

    def stage(batch_size: int, max_steps: int, lr_divisor: float, eval_interval: int):
        """A stage at lr / lr_divisor, decaying to a tenth of that."""
        rate = float(f"{lr / lr_divisor:.6g}")  # 0.003, not 0.0030000000000000005
        return TrainConfig(
            batch_size=batch_size,
            max_steps=max_steps,
            lr=rate,
            min_lr=float(f"{rate / 10:.6g}"),
            eval_interval=eval_interval,
            **common,
        )

    stages = dict(
        sft=stage(32, 400, 2, 100),
        # LoRA: SFT's data and length at three times its rate, since only a low-rank
        # update moves (measured at the cpu preset: x1 and x10 learned less, issue 21)
        lora=stage(32, 400, 2 / 3, 100),
        reward=stage(16, 300, 4, 100),
        dpo=stage(16, 100, 5, 25),
        # RL: batch_size prompts per step, each answered group_size times. The policy
        # gradient is noisy: GRPO at a tenth of pretraining's rate lowered the cpu
        # model's greedy accuracy by 0.06, at a fortieth it held (measured, issue 18).
        # PPO moves faster, so that chapter 9 can show the reward model being fooled.
        grpo=stage(16, 40, 40, 40),
        ppo=stage(8, 40, 20, 10),
    )
    for stage in STAGES:
        if isinstance(changes.get(stage), dict):
            changes[stage] = replace(stages[stage], **changes[stage])
    return AlignSettings(**{**stages, **changes})


def _preset(
    name: str,
    device: str,
    hardware: str,
    memory_gib: float,
    peak_tflops: float,
    bf16: bool,
    model: dict,
    train: dict,
    notes: str = "",
    data: dict | None = None,
    align: dict | None = None,
    evaluation: dict | None = None,
    quantize: dict | None = None,
) -> Preset:
    model_config, train_config = ModelConfig(**model), TrainConfig(**train)
    return Preset(
        name,
        device,
        hardware,
        memory_gib,
        peak_tflops,
        bf16,
        model_config,
        train_config,
        DataSettings(**(data or {})),
        post_training(model_config, train_config, **(align or {})),
        EvalSettings(**(evaluation or {})),
        QuantSettings(**(quantize or {})),
        notes,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "ci",
            "cpu",
            "any CPU (tests)",
            4,
            0.1,
            False,
            dict(
                vocab_size=512,
                d_model=64,
                n_layers=2,
                n_heads=4,
                n_kv_heads=2,
                d_ff=192,
                max_seq_len=128,
            ),
            dict(
                batch_size=16,
                seq_len=64,
                max_steps=200,
                warmup_steps=20,
                lr=3e-3,
                min_lr=3e-4,
                eval_interval=50,
                eval_steps=4,
            ),
            "seconds per chapter; used by FOUNDRY_FAST=1 and the test suite",
            # A few plays, and post-training runs long and fast enough that the tiny
            # model learns the tasks, with effects large enough for the chapters'
            # checks (scripts/check_robustness.py).
            data=dict(max_documents=8, val_fraction=0.25),
            align=dict(
                # SFT: 400 steps left the tasks half-learned at some seeds and machines
                # (held-out accuracy 0.08-0.26 over seeds 0-4, fp32 and bf16, 1 and 2
                # threads; 0.08 failed CI); 800 steps gave 0.23-0.39 (12 such runs)
                sft=dict(max_steps=800, lr=3e-3, min_lr=3e-4),
                # rank 16 of 64, which learned faster than rank 8 (issue 21). 250
                # steps (and 400) left it right on 0.04-0.05 of the held-out questions
                # at seed 4, barely above the base model's 0 for chapter 6's check;
                # 600 steps gave 0.11-0.12 there (fp32 and bf16)
                lora=dict(max_steps=600),
                lora_rank=16,
                lora_alpha=32.0,
                reward=dict(max_steps=150, lr=1e-3, min_lr=1e-4, eval_interval=50),
                dpo=dict(max_steps=200, lr=1e-3, min_lr=1e-4, eval_interval=50),
                # GRPO: after 40 steps, the low end of chapter 9's sampled gain was
                # +0.007 to +0.035 (14 runs); after 80, +0.023 to +0.049 (15 runs)
                grpo=dict(max_steps=80, lr=3e-4, min_lr=3e-5),
                ppo=dict(lr=6e-4, min_lr=6e-5),
                rl_eval_samples=4,
                train_per_task=2000,
                test_per_task=150,
                on_policy_prompts=300,
                offline_pairs=1000,
            ),
            evaluation=dict(max_windows=16),
        ),
        _preset(
            "cpu",
            "cpu",
            "2-core CPU runner (measured ~0.1 TFLOP/s fp32)",
            8,
            0.1,
            False,
            dict(
                vocab_size=4096,
                d_model=256,
                n_layers=6,
                n_heads=8,
                n_kv_heads=4,
                d_ff=768,
                max_seq_len=256,
            ),
            dict(
                batch_size=16,
                seq_len=256,
                max_steps=300,
                warmup_steps=30,
                lr=2e-3,
                min_lr=2e-4,
                eval_interval=50,
                eval_steps=10,
            ),
            "the default: a laptop or a CI runner; faster CPUs simply finish sooner",
            # GRPO long enough, at twice the default rate, for a held-out gain beyond
            # the interval at pretraining seeds 0 and 1 (40 steps: +0.03, too thin)
            align=dict(grpo=dict(max_steps=100, lr=1e-4, min_lr=1e-5)),
        ),
        _preset(
            "rtx3060",
            "cuda",
            "NVIDIA GeForce RTX 3060 (12 GB)",
            12,
            25,
            True,
            dict(
                vocab_size=16384,
                d_model=640,
                n_layers=10,
                n_heads=10,
                n_kv_heads=5,
                d_ff=1792,
                max_seq_len=512,
            ),
            dict(
                batch_size=16,
                seq_len=512,
                grad_accum_steps=4,
                max_steps=3000,
                warmup_steps=200,
                lr=1e-3,
                min_lr=1e-4,
                eval_interval=250,
                compile=True,
            ),
            "Ampere: bf16 tensor cores; "
            "peak = 112 tensor cores x 128 FLOP/clock x 1.78 GHz",
            data=dict(large_corpus="tinystories"),
        ),
        _preset(
            "rtx5060",
            "cuda",
            "NVIDIA GeForce RTX 5060 (8 GB)",
            8,
            38,
            True,
            dict(
                vocab_size=16384,
                d_model=768,
                n_layers=9,
                n_heads=12,
                n_kv_heads=4,
                d_ff=2048,
                max_seq_len=512,
            ),
            dict(
                batch_size=16,
                seq_len=512,
                grad_accum_steps=4,
                max_steps=3000,
                warmup_steps=200,
                lr=1e-3,
                min_lr=1e-4,
                eval_interval=250,
                compile=True,
            ),
            "~70M parameters; peak from NVIDIA's 614 sparse FP4 TOPS, "
            "halved for dense, FP16 and FP32 accumulate",
            data=dict(large_corpus="tinystories"),
        ),
        _preset(
            "rtx4090",
            "cuda",
            "NVIDIA GeForce RTX 4090 (24 GB)",
            24,
            165,
            True,
            dict(
                vocab_size=16384,
                d_model=1024,
                n_layers=16,
                n_heads=16,
                n_kv_heads=8,
                d_ff=2816,
                max_seq_len=1024,
            ),
            dict(
                batch_size=8,
                seq_len=1024,
                grad_accum_steps=8,
                max_steps=5000,
                warmup_steps=300,
                lr=6e-4,
                min_lr=6e-5,
                eval_interval=500,
                compile=True,
            ),
            "200M+ parameters; "
            "peak: Ada whitepaper, dense FP16/BF16 with FP32 accumulate",
            data=dict(large_corpus="tinystories"),
        ),
        _preset(
            "a100",
            "cuda",
            "NVIDIA A100 80GB (also H100 / H200)",
            80,
            312,
            True,
            dict(
                vocab_size=16384,
                d_model=1280,
                n_layers=20,
                n_heads=20,
                n_kv_heads=4,
                d_ff=3456,
                max_seq_len=1024,
            ),
            dict(
                batch_size=32,
                seq_len=1024,
                grad_accum_steps=2,
                max_steps=10000,
                warmup_steps=500,
                lr=5e-4,
                min_lr=5e-5,
                eval_interval=500,
                compile=True,
            ),
            "~400M parameters; peak: A100 dense BF16 (an H100 is about 3x faster)",
            data=dict(large_corpus="tinystories"),
        ),
        _preset(
            "m4pro",
            "mps",
            "Apple M4 Pro (32 GB unified memory)",
            32,
            8,
            False,
            dict(
                vocab_size=16384,
                d_model=768,
                n_layers=9,
                n_heads=12,
                n_kv_heads=4,
                d_ff=2048,
                max_seq_len=512,
            ),
            dict(
                batch_size=16,
                seq_len=512,
                grad_accum_steps=4,
                max_steps=3000,
                warmup_steps=200,
                lr=1e-3,
                min_lr=1e-4,
                eval_interval=250,
            ),
            "~68M parameters in float32 on MPS; "
            "peak ~8 TFLOP/s fp32 (20-core GPU, approximate)",
            data=dict(large_corpus="tinystories"),
        ),
    )
}

# Machines readers often have, for showing what the picker would do on each.
EXAMPLE_MACHINES: tuple[HardwareInfo, ...] = (
    HardwareInfo("cpu", "laptop CPU, 8 cores", 16 * GIB, bf16=False, cpu_cores=8),
    HardwareInfo("mps", "Apple M2 MacBook Air", 16 * GIB, bf16=False, cpu_cores=8),
    PRESETS["m4pro"].target(),
    HardwareInfo("cuda", "Google Colab T4 (no bf16)", 15 * GIB, bf16=False),
    PRESETS["rtx5060"].target(),
    PRESETS["rtx3060"].target(),
    PRESETS["rtx4090"].target(),
    PRESETS["a100"].target(),
)
