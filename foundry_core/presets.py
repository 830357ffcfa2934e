"""Named recipes, one per kind of machine, and the rule that picks one.

A preset is the whole recipe of a run on a given machine: the data, how big a model, how to pretrain
it (batch, precision, schedule), and the SFT, reward and DPO runs after it. Nothing else in the course
decides a setting, and `with_overrides` changes any of them through the same validation. A preset's
expected memory and time are not typed in: they are computed from the configs
(memory.estimate_memory and ModelConfig.flops_per_token), so they stay true when a preset changes.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from .config import (
    AlignSettings,
    DataSettings,
    EvalSettings,
    ModelConfig,
    TrainConfig,
    check_compatible,
)
from .hardware import GIB, HardwareInfo, choose_precision, detect
from .memory.estimate import MemoryEstimate, estimate_memory

HEADROOM = 0.15  # a preset must leave this fraction of its card's memory free (fragmentation, spikes)

# Share of memory a GPU may use. macOS caps the GPU's working set at roughly 3/4 of unified memory.
USABLE_FRACTION = {"cuda": 1.0, "mps": 0.75, "cpu": 1.0}

# Model FLOPs utilisation assumed for time estimates: the share of the peak a training step really
# sustains. Typical well-tuned small-model values; the benchmarks measure the real figure.
ASSUMED_MFU = {"cuda": 0.35, "mps": 0.25, "cpu": 0.5}


@dataclass(frozen=True)
class Preset:
    """A whole recipe sized for one target machine: data, model, pretraining and post-training."""

    name: str
    device: str  # the device kind the preset is meant for
    hardware: str  # the target machine, in words
    memory_gib: float  # its device memory (system RAM for MPS and CPU)
    peak_tflops: float  # its dense matmul peak at the preset's precision (approximate, from spec sheets)
    bf16: bool  # whether the target runs bf16 natively
    model: ModelConfig
    train: TrainConfig  # pretraining
    data: DataSettings
    align: AlignSettings  # SFT, reward model and DPO
    evaluation: EvalSettings
    notes: str = ""

    def __post_init__(self) -> None:
        for config in (self.train, self.align.sft, self.align.reward, self.align.dpo):
            check_compatible(self.model, config)

    def target(self) -> HardwareInfo:
        """The machine this preset was sized for, as if `detect()` had found it."""
        return HardwareInfo(
            self.device, self.hardware, int(self.memory_gib * GIB), self.bf16
        )

    def estimate_memory(self, info: HardwareInfo | None = None) -> MemoryEstimate:
        return estimate_memory(self.model, self.train, info or self.target())

    def fits(self, info: HardwareInfo | None = None) -> bool:
        """Does the memory estimate leave HEADROOM free on `info` (default: the target machine)?"""
        info = info or self.target()
        if info.memory_bytes is None:
            return False
        usable = info.memory_bytes * USABLE_FRACTION[info.device]
        return self.estimate_memory(info).total <= (1 - HEADROOM) * usable

    def estimate_seconds(
        self, tflops: float | None = None, mfu: float | None = None
    ) -> float:
        """Expected wall time of the whole run: total FLOPs / (peak x assumed utilisation). An estimate."""
        peak = self.peak_tflops if tflops is None else tflops
        mfu = ASSUMED_MFU[self.device] if mfu is None else mfu
        flops = self.train.total_tokens * self.model.flops_per_token(self.train.seq_len)
        return flops / (peak * 1e12 * mfu)

    def summary(self) -> dict[str, object]:
        """One row of the preset table, every number computed from the configs."""
        m, t = self.model, self.train
        return {
            "preset": self.name,
            "hardware": self.hardware,
            "params (M)": _sig3(m.num_params() / 1e6),
            "layers x d_model": f"{m.n_layers} x {m.d_model}",
            "heads / kv heads": f"{m.n_heads} / {m.n_kv_heads}",
            "vocab": m.vocab_size,
            "batch x seq x accum": f"{t.batch_size} x {t.seq_len} x {t.grad_accum_steps}",
            "precision": choose_precision(self.target(), t.dtype).dtype,
            "tokens (M)": _sig3(t.total_tokens / 1e6),
            "est. memory (GiB)": round(self.estimate_memory().total / GIB, 2),
            "device memory (GiB)": self.memory_gib,
            "est. time": format_duration(self.estimate_seconds()),
        }


def _sig3(x: float) -> float | int:
    """Three significant figures, as a reader would quote them (0.125, 5.4, 206)."""
    rounded = float(f"{x:.3g}")
    return int(rounded) if rounded >= 100 else rounded


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h': the unit a reader would use."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def post_training(
    model: ModelConfig, train: TrainConfig, **changes: Any
) -> AlignSettings:
    """The usual post-training recipe for a pretraining run: short runs on 128-token chats, at learning
    rates below pretraining's (SFT half, reward model a quarter, DPO a fifth: each stage starts from a
    trained model that a large step would undo). Seeds and precision follow the pretraining run."""
    lr = train.lr
    common = dict(
        seq_len=min(128, model.max_seq_len),
        warmup_steps=10,
        weight_decay=0.0,
        eval_steps=4,
        seed=train.seed,
        dtype=train.dtype,
    )
    stages = dict(
        sft=TrainConfig(
            batch_size=32,
            max_steps=400,
            lr=lr / 2,
            min_lr=lr / 20,
            eval_interval=100,
            **common,
        ),
        reward=TrainConfig(
            batch_size=16,
            max_steps=300,
            lr=lr / 4,
            min_lr=lr / 40,
            eval_interval=100,
            **common,
        ),
        dpo=TrainConfig(
            batch_size=16,
            max_steps=100,
            lr=lr / 5,
            min_lr=lr / 50,
            eval_interval=25,
            **common,
        ),
    )
    for stage in ("sft", "reward", "dpo"):
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
            # A few plays, and post-training runs long and fast enough that the tiny model learns the
            # tasks, with effects large enough for the chapters' checks (scripts/check_robustness.py).
            data=dict(max_documents=8, val_fraction=0.25),
            align=dict(
                sft=dict(max_steps=400, lr=3e-3, min_lr=3e-4),
                reward=dict(max_steps=150, lr=1e-3, min_lr=1e-4, eval_interval=50),
                dpo=dict(max_steps=200, lr=1e-3, min_lr=1e-4, eval_interval=50),
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
            "Ampere: bf16 tensor cores; peak = 112 tensor cores x 128 FLOP/clock x 1.78 GHz",
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
            "~70M parameters; peak from NVIDIA's 614 sparse FP4 TOPS, halved for dense, FP16 and FP32 accumulate",
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
            "200M+ parameters; peak: Ada whitepaper, dense FP16/BF16 with FP32 accumulate",
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
            "~68M parameters in float32 on MPS; peak ~8 TFLOP/s fp32 (20-core GPU, approximate)",
        ),
    )
}


def known_peak_tflops(preset: Preset, info: HardwareInfo) -> float | None:
    """The preset's peak TFLOP/s when `info` is the card it was sized for (matched by name: "NVIDIA
    A100-SXM4-80GB" is the `a100` preset's "NVIDIA A100 80GB"), else None. The Trainer records MFU only
    against a peak it knows: a CPU's, or another card's, is not known, and MFU against a guess misleads."""
    if info.device == "cpu" or info.device != preset.device:
        return None
    words = set(re.findall(r"[a-z0-9]+", info.name.lower()))
    card = re.findall(r"[a-z0-9]+", preset.hardware.split("(")[0].lower())
    return (
        preset.peak_tflops
        if all(w in words for w in card if not w.endswith("gb"))
        else None
    )


CELL_TIMEOUT_FLOOR = (
    300  # seconds; at the `ci` preset no cell of any chapter comes near it
)


def cell_timeout(preset: Preset) -> int:
    """Seconds one notebook cell may run at `preset` before a build calls it stuck.

    The longest cell trains a whole stage, at most the preset's pretraining run. Its estimate assumes a
    typical utilisation, so four times it leaves room for a machine that is several times slower, and
    a stuck build still ends instead of holding its machine for a day.
    """
    return int(max(CELL_TIMEOUT_FLOOR, 4 * preset.estimate_seconds()))


@dataclass(frozen=True)
class PresetChoice:
    preset: Preset
    reason: str


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def fast_mode(env: Mapping[str, str] | None = None) -> bool:
    """True under FOUNDRY_FAST=1: the test run, where every chapter shrinks to seconds."""
    return _flag(os.environ if env is None else env, "FOUNDRY_FAST")


def course_seed(env: Mapping[str, str] | None = None) -> int:
    """FOUNDRY_SEED (default 0): the shift applied to every seed the course uses.

    Data split, initialisation, batch order, task generation, preference pairs and sampling all derive
    from it, and it is part of every artifact's cache key. Rerunning the book at another seed shows
    which of its claims hold beyond one training trajectory (scripts/check_robustness.py).
    """
    raw = (os.environ if env is None else env).get("FOUNDRY_SEED", "").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"FOUNDRY_SEED must be a non-negative integer, got {raw!r}")
    return int(raw)


def from_environment(preset: Preset, env: Mapping[str, str] | None = None) -> Preset:
    """`preset` with the environment's choices applied: FOUNDRY_SEED shifts every seed of the recipe, and
    FOUNDRY_DTYPE (auto, float32, bfloat16, float16) sets the precision of every training run."""
    env = os.environ if env is None else env
    changes: dict[str, dict[str, Any]] = {}
    shift = course_seed(env)
    if shift:
        for section in (
            "train",
            "data",
            "align",
            "sft",
            "reward",
            "dpo",
        ):  # every seed of the recipe
            changes[section] = {"seed": _section(preset, section).seed + shift}
    dtype = env.get("FOUNDRY_DTYPE", "").strip()
    if dtype:
        for section in TRAINING_RUNS:
            changes.setdefault(section, {})["dtype"] = dtype
    try:
        return _apply(preset, changes) if changes else preset
    except ValueError as err:
        raise ValueError(f"FOUNDRY_DTYPE: {err}") from None


def get_preset(name: str, env: Mapping[str, str] | None = None) -> Preset:
    """The preset called `name`, with FOUNDRY_SEED and FOUNDRY_DTYPE applied (see from_environment)."""
    try:
        return from_environment(PRESETS[name], env)
    except KeyError:
        raise ValueError(
            f"unknown preset '{name}': valid presets are {', '.join(PRESETS)}"
        ) from None


def select_preset(
    info: HardwareInfo, env: Mapping[str, str] | None = None
) -> PresetChoice:
    """Pick a preset for `info`, and say why.

    FOUNDRY_FAST=1 wins (tests must stay fast), then FOUNDRY_PRESET=<name>. Otherwise: among the
    presets made for this kind of device, the one sized for the largest card this device matches
    (and whose estimate fits here with headroom); the `cpu` preset when none does.
    """
    env = os.environ if env is None else env
    choice = _select(info, env)
    return PresetChoice(from_environment(choice.preset, env), choice.reason)


def _select(info: HardwareInfo, env: Mapping[str, str]) -> PresetChoice:
    if fast_mode(env):
        return PresetChoice(
            PRESETS["ci"], "FOUNDRY_FAST=1 selects the tiny 'ci' preset"
        )
    if env.get("FOUNDRY_PRESET"):
        name = env["FOUNDRY_PRESET"].strip()
        return PresetChoice(get_preset(name, env={}), f"FOUNDRY_PRESET={name}")
    if info.device == "cpu":
        return PresetChoice(PRESETS["cpu"], "no GPU found: the CPU preset")
    # Cards report a little less than their nominal size (an "8 GB" card shows ~7.6 GiB), hence 0.9.
    fitting = [
        p
        for p in PRESETS.values()
        if p.device == info.device
        and info.memory_gib is not None
        and p.memory_gib * 0.9 <= info.memory_gib
        and p.fits(info)
    ]
    if not fitting:
        memory = "unknown" if info.memory_gib is None else f"{info.memory_gib:.1f} GiB"
        return PresetChoice(
            PRESETS["cpu"],
            f"no {info.device} preset fits {memory}: the CPU-sized preset",
        )
    best = max(fitting, key=lambda p: p.memory_gib)
    return PresetChoice(
        best,
        f"{info.memory_gib:.1f} GiB of {info.device} memory: the preset sized for "
        f"{best.memory_gib:g} GB, which fits with {HEADROOM:.0%} headroom",
    )


def pick_preset(info: HardwareInfo | None = None) -> Preset:
    """The preset for this machine (see select_preset for the rule)."""
    return select_preset(info or detect()).preset


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


# What `with_overrides` and the CLI's --set can change: "<section>.<field>=<value>".
SECTIONS = ("model", "train", "data", "align", "sft", "reward", "dpo", "evaluation")
TRAINING_RUNS = ("train", "sft", "reward", "dpo")  # the sections that are a TrainConfig


def with_overrides(preset: Preset, *settings: str, **train_fields: Any) -> Preset:
    """A copy of `preset` with some settings changed, each validated like any config.

    `settings` are "section.field=value" strings, as the CLI's --set takes them: the section is model,
    train (pretraining), data, sft, reward, dpo, align (post-training's own settings: beta, template,
    task sizes) or evaluation. Keyword arguments are shorthand for pretraining fields: with_overrides(p, batch_size=8).

        with_overrides(preset, "sft.max_steps=300", "train.lr=1e-3", "align.beta=0.3")
    """
    changes: dict[str, dict[str, Any]] = {}
    for setting in settings:
        section, name, value = parse_setting(preset, setting)
        changes.setdefault(section, {})[name] = value
    if train_fields:
        changes.setdefault("train", {}).update(train_fields)
    for section in TRAINING_RUNS:
        _keep_warmup_share(_section(preset, section), changes.get(section, {}))
    return _apply(preset, changes)


def _keep_warmup_share(config: TrainConfig, changes: dict[str, Any]) -> None:
    """A run shortened below its warmup keeps the warmup's share of the run (sft.max_steps=5: no warmup
    instead of an error), unless warmup_steps is set too."""
    steps = changes.get("max_steps")
    if (
        isinstance(steps, int)
        and "warmup_steps" not in changes
        and config.warmup_steps >= steps > 0
    ):
        changes["warmup_steps"] = config.warmup_steps * steps // config.max_steps


def parse_setting(preset: Preset, setting: str) -> tuple[str, str, Any]:
    """'sft.max_steps=300' -> ('sft', 'max_steps', 300), the value typed like the field it replaces."""
    key, equals, raw = setting.partition("=")
    section, dot, name = key.strip().partition(".")
    if not equals or not dot or section not in SECTIONS:
        raise ValueError(
            f"a setting is <section>.<field>=<value> with section one of {', '.join(SECTIONS)}; "
            f"got {setting!r}"
        )
    config = _section(preset, section)
    names = [
        f.name
        for f in fields(config)
        if not isinstance(getattr(config, f.name), TrainConfig)
    ]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = (
            f"did you mean '{section}.{close[0]}'?"
            if close
            else f"valid fields: {', '.join(names)}"
        )
        raise ValueError(f"unknown setting '{key.strip()}': {hint}")
    return section, name, _typed(raw.strip(), getattr(config, name), key.strip())


def _typed(raw: str, current: Any, key: str) -> Any:
    """The text of a value as the type of the value it replaces: '3e-4' a float, 'true' a bool."""
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"{key} is true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes", "on")
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # the config's own validation says what it expected
    return float(value) if isinstance(current, float) and type(value) is int else value


def _section(preset: Preset, section: str) -> Any:
    if section in ("sft", "reward", "dpo"):
        return getattr(preset.align, section)
    return getattr(preset, section)


def _apply(preset: Preset, changes: dict[str, dict[str, Any]]) -> Preset:
    """Rebuild each changed section through its from_dict, so every change is validated."""
    changes = {section: dict(values) for section, values in changes.items()}
    align = changes.pop("align", {})
    for stage in ("sft", "reward", "dpo"):
        if stage in changes:
            align[stage] = {
                **getattr(preset.align, stage).to_dict(),
                **changes.pop(stage),
            }
    if align:
        changes["align"] = align
    rebuilt = {
        section: type(_section(preset, section)).from_dict(
            {**_section(preset, section).to_dict(), **values}
        )
        for section, values in changes.items()
    }
    return replace(preset, **rebuilt)
