"""What a recipe is, and the one way to change it.

A `Preset` is the whole recipe of a run on a given machine: the data, how big a model,
how to pretrain it (batch, precision, schedule), the SFT, reward and DPO runs after it,
and how to evaluate. Nothing else in the course decides a setting. `with_overrides`
(and the CLI's `--set`) changes any of them through the same validation as the configs
themselves, and `from_environment` applies FOUNDRY_SEED and FOUNDRY_DTYPE the same way.
A preset's expected memory and time are not typed in: they are computed from the configs
(`memory.estimate_memory`, `ModelConfig.flops_per_token`), so they stay true when a
preset changes. The named presets are in catalog.py; presets.py picks one.
"""

from __future__ import annotations

import ast
import difflib
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from .config import ModelConfig, TrainConfig, check_compatible
from .hardware import GIB, HardwareInfo, choose_precision
from .memory.estimate import MemoryEstimate, estimate_memory
from .settings import STAGES, AlignSettings, DataSettings, EvalSettings, QuantSettings

# The fraction of its card's memory a preset must leave free (fragmentation, spikes).
HEADROOM = 0.15

# Share of memory a GPU may use: macOS caps the GPU's working set at about 3/4 of
# unified memory.
USABLE_FRACTION = {"cuda": 1.0, "mps": 0.75, "cpu": 1.0}

# Model FLOPs utilisation assumed for time estimates: the share of the peak a training
# step really sustains. Typical well-tuned small-model values; the benchmarks measure
# the real figure.
ASSUMED_MFU = {"cuda": 0.35, "mps": 0.25, "cpu": 0.5}


@dataclass(frozen=True)
class Preset:
    """A whole recipe sized for one target machine: data, model, pretraining,
    post-training, evaluation and quantization."""

    name: str
    device: str  # the device kind the preset is meant for
    hardware: str  # the target machine, in words
    memory_gib: float  # its device memory (system RAM for MPS and CPU)
    # its dense matmul peak at the preset's precision (approximate, from spec sheets)
    peak_tflops: float
    bf16: bool  # whether the target runs bf16 natively
    model: ModelConfig
    train: TrainConfig  # pretraining
    data: DataSettings
    align: AlignSettings  # SFT, reward model and DPO
    evaluation: EvalSettings
    quantize: QuantSettings
    notes: str = ""

    def __post_init__(self) -> None:
        for config in (self.train, *(getattr(self.align, s) for s in STAGES)):
            check_compatible(self.model, config)

    def target(self) -> HardwareInfo:
        """The machine this preset was sized for, as if `detect()` had found it."""
        return HardwareInfo(
            self.device, self.hardware, int(self.memory_gib * GIB), self.bf16
        )

    def estimate_memory(self, info: HardwareInfo | None = None) -> MemoryEstimate:
        return estimate_memory(self.model, self.train, info or self.target())

    def fits(self, info: HardwareInfo | None = None) -> bool:
        """Does the memory estimate leave HEADROOM free on `info` (default: the
        target machine)?"""
        info = info or self.target()
        if info.memory_bytes is None:
            return False
        usable = info.memory_bytes * USABLE_FRACTION[info.device]
        return self.estimate_memory(info).total <= (1 - HEADROOM) * usable

    def estimate_seconds(
        self, tflops: float | None = None, mfu: float | None = None
    ) -> float:
        """Expected wall time of the whole run, an estimate:
        total FLOPs / (peak x assumed utilisation)."""
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
            "batch x seq x accum": (
                f"{t.batch_size} x {t.seq_len} x {t.grad_accum_steps}"
            ),
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


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def fast_mode(env: Mapping[str, str] | None = None) -> bool:
    """True under FOUNDRY_FAST=1: the test run, where chapters shrink to seconds."""
    return _flag(os.environ if env is None else env, "FOUNDRY_FAST")


def course_seed(env: Mapping[str, str] | None = None) -> int:
    """FOUNDRY_SEED (default 0): the shift applied to every seed the course uses.

    Data split, initialisation, batch order, task generation, preference pairs and
    sampling all derive from it, and it is part of every artifact's cache key. Rerunning
    the book at another seed shows which of its claims hold beyond one training
    trajectory (scripts/check_robustness.py).
    """
    raw = (os.environ if env is None else env).get("FOUNDRY_SEED", "").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"FOUNDRY_SEED must be a non-negative integer, got {raw!r}")
    return int(raw)


# FOUNDRY_CORPUS: the course's language track and its corpus
TRACKS = {"en": "shakespeare", "zh": "chinese"}
# The guide's vocabulary rule: 8k-16k tokens for English, 16k-32k for Chinese-heavy
# text, whose thousands of characters each need a piece (chapter 2 measures why). On
# the idioms 2,666 characters cover 98% of the text, the least SentencePiece allows,
# so no vocabulary under 4096 leaves room for merges.
CHINESE_VOCAB_FACTOR = 2
CHINESE_MIN_VOCAB = 4096


def corpus_track(env: Mapping[str, str] | None = None) -> str:
    """FOUNDRY_CORPUS: "en" (the default, Shakespeare) or "zh" (the Chinese track)."""
    raw = (os.environ if env is None else env).get("FOUNDRY_CORPUS", "").strip()
    track = raw.lower() or "en"
    if track not in TRACKS:
        raise ValueError(
            f"FOUNDRY_CORPUS must be one of {', '.join(TRACKS)}, got {raw!r}"
        )
    return track


def chinese_track(preset: Preset) -> Preset:
    """`preset` on the Chinese track: the whole idiom dictionary as its corpus (every
    preset reads all of it: the tasks of chapter 6 need its sources), no English large
    corpus, and twice the vocabulary (at least CHINESE_MIN_VOCAB)."""
    return _apply(
        preset,
        {
            "data": {
                "corpus": TRACKS["zh"],
                "max_documents": None,
                "large_corpus": None,
            },
            "model": {
                "vocab_size": max(
                    preset.model.vocab_size * CHINESE_VOCAB_FACTOR, CHINESE_MIN_VOCAB
                )
            },
        },
    )


def from_environment(preset: Preset, env: Mapping[str, str] | None = None) -> Preset:
    """`preset` with the environment's choices applied: FOUNDRY_CORPUS=zh puts it on
    the Chinese track, FOUNDRY_SEED shifts every seed of the recipe, and FOUNDRY_DTYPE
    (auto, float32, bfloat16, float16) sets the precision of every training run."""
    env = os.environ if env is None else env
    if corpus_track(env) == "zh" and preset.data.corpus != TRACKS["zh"]:
        preset = chinese_track(preset)
    changes: dict[str, dict[str, Any]] = {}
    shift = course_seed(env)
    if shift:
        for section in SEEDED:
            changes[section] = {"seed": _section(preset, section).seed + shift}
    dtype = env.get("FOUNDRY_DTYPE", "").strip()
    if dtype:
        for section in TRAINING_RUNS:
            changes.setdefault(section, {})["dtype"] = dtype
    try:
        return _apply(preset, changes) if changes else preset
    except ValueError as err:
        raise ValueError(f"FOUNDRY_DTYPE: {err}") from None


# What `with_overrides` and the CLI's --set can change: "<section>.<field>=<value>".
SECTIONS = (
    *("model", "train", "data", "align", *STAGES),
    *("evaluation", "quantize"),
)
TRAINING_RUNS = ("train", *STAGES)  # the sections that are a TrainConfig
SEEDED = ("train", "data", "align", *STAGES)  # the sections with a seed


def with_overrides(preset: Preset, *settings: str, **train_fields: Any) -> Preset:
    """A copy of `preset` with some settings changed, each validated like any config.

    `settings` are "section.field=value" strings, as the CLI's --set takes them: the
    section is model, train (pretraining), data, sft, reward, dpo, grpo, ppo, align
    (post-training's own settings: beta, template, task sizes, RL), evaluation or
    quantize. Keyword
    arguments are shorthand for pretraining fields: with_overrides(p, batch_size=8).

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
    """A run shortened below its warmup keeps the warmup's share of the run
    (sft.max_steps=5: no warmup instead of an error), unless warmup_steps is set too."""
    steps = changes.get("max_steps")
    if (
        isinstance(steps, int)
        and "warmup_steps" not in changes
        and config.warmup_steps >= steps > 0
    ):
        changes["warmup_steps"] = config.warmup_steps * steps // config.max_steps


def parse_setting(preset: Preset, setting: str) -> tuple[str, str, Any]:
    """'sft.max_steps=300' -> ('sft', 'max_steps', 300), the value typed like the field
    it replaces."""
    key, equals, raw = setting.partition("=")
    section, dot, name = key.strip().partition(".")
    if not equals or not dot or section not in SECTIONS:
        raise ValueError(
            "a setting is <section>.<field>=<value> with section one of "
            f"{', '.join(SECTIONS)}; "
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
    """The text of a value as the type of the value it replaces: '3e-4' a float, 'true'
    a bool."""
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
    if isinstance(current, float) and type(value) is int:
        return float(value)
    return value


def _section(preset: Preset, section: str) -> Any:
    if section in STAGES:
        return getattr(preset.align, section)
    return getattr(preset, section)


def _apply(preset: Preset, changes: dict[str, dict[str, Any]]) -> Preset:
    """Rebuild each changed section through its from_dict, so every change is
    validated."""
    changes = {section: dict(values) for section, values in changes.items()}
    align = changes.pop("align", {})
    for stage in STAGES:
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
