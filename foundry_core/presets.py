"""Named recipes, one per kind of machine, and the rule that picks one.

The recipe itself (`Preset`, `with_overrides`, the environment's settings) is in
recipe.py, the named presets in catalog.py; this module picks one for the machine at
hand and says why. Everything the course imports from `foundry_core.presets` is
importable from here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from .catalog import EXAMPLE_MACHINES, PRESETS, post_training
from .hardware import HardwareInfo, detect
from .recipe import (
    ASSUMED_MFU,
    HEADROOM,
    SECTIONS,
    TRAINING_RUNS,
    USABLE_FRACTION,
    Preset,
    course_seed,
    fast_mode,
    format_duration,
    from_environment,
    parse_setting,
    with_overrides,
)

__all__ = [
    "ASSUMED_MFU",
    "CELL_TIMEOUT_FLOOR",
    "EXAMPLE_MACHINES",
    "HEADROOM",
    "PRESETS",
    "SECTIONS",
    "TRAINING_RUNS",
    "USABLE_FRACTION",
    "Preset",
    "PresetChoice",
    "cell_timeout",
    "course_seed",
    "fast_mode",
    "format_duration",
    "from_environment",
    "get_preset",
    "known_peak_tflops",
    "parse_setting",
    "pick_preset",
    "post_training",
    "select_preset",
    "with_overrides",
]


def known_peak_tflops(preset: Preset, info: HardwareInfo) -> float | None:
    """The preset's peak TFLOP/s when `info` is the card it was sized for, else None.

    Cards are matched by name: "NVIDIA A100-SXM4-80GB" is the `a100` preset's "NVIDIA
    A100 80GB". The Trainer records MFU only against a peak it knows: a CPU's, or
    another card's, is not known, and MFU against a guess misleads.
    """
    if info.device == "cpu" or info.device != preset.device:
        return None
    words = set(re.findall(r"[a-z0-9]+", info.name.lower()))
    card = re.findall(r"[a-z0-9]+", preset.hardware.split("(")[0].lower())
    return (
        preset.peak_tflops
        if all(w in words for w in card if not w.endswith("gb"))
        else None
    )


# seconds; at the `ci` preset no cell of any chapter comes near it
CELL_TIMEOUT_FLOOR = 300


def cell_timeout(preset: Preset) -> int:
    """Seconds one notebook cell may run at `preset` before a build calls it stuck.

    The longest cell trains a whole stage, at most the preset's pretraining run. Its
    estimate assumes a typical utilisation, so four times it leaves room for a machine
    that is several times slower, and a stuck build still ends instead of holding its
    machine for a day.
    """
    return int(max(CELL_TIMEOUT_FLOOR, 4 * preset.estimate_seconds()))


@dataclass(frozen=True)
class PresetChoice:
    preset: Preset
    reason: str


def get_preset(name: str, env: Mapping[str, str] | None = None) -> Preset:
    """The preset called `name`, with FOUNDRY_SEED and FOUNDRY_DTYPE applied (see
    recipe.from_environment)."""
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

    FOUNDRY_FAST=1 wins (tests must stay fast), then FOUNDRY_PRESET=<name>. Otherwise:
    among the presets made for this kind of device, the one sized for the largest card
    this device matches (and whose estimate fits here with headroom); the `cpu` preset
    when none does.
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
    # Cards report a little less than their nominal size (an "8 GB" card shows
    # ~7.6 GiB), hence 0.9.
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
