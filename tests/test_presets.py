"""Presets: sized to fit their machines, chosen by a stated rule, overridable.

Their errors are clear.
"""

import re

import pytest

from foundry_core import (
    EXAMPLE_MACHINES,
    PRESETS,
    HardwareInfo,
    get_preset,
    pick_preset,
    select_preset,
)
from foundry_core.hardware import GIB
from foundry_core.pipeline.store import stage_dir
from foundry_core.presets import HEADROOM, USABLE_FRACTION, fast_mode, with_overrides

GPU_PRESETS = [p for p in PRESETS.values() if p.device in ("cuda", "mps")]
NO_ENV: dict[str, str] = {}


def test_the_issue_s_presets_exist():
    assert {"ci", "cpu", "rtx3060", "rtx5060", "rtx4090", "m4pro", "a100"} <= set(
        PRESETS
    )


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: p.name)
def test_each_gpu_preset_fits_its_card_with_headroom(preset):
    usable = preset.memory_gib * GIB * USABLE_FRACTION[preset.device]
    assert preset.estimate_memory().total <= (1 - HEADROOM) * usable


@pytest.mark.parametrize(
    "preset", [p for p in PRESETS.values() if p.name != "ci"], ids=lambda p: p.name
)
def test_each_preset_is_picked_on_its_own_machine(preset):
    assert select_preset(preset.target(), env=NO_ENV).preset is preset


def test_named_sizes():
    assert 60e6 <= PRESETS["rtx5060"].model.num_params() <= 80e6  # "~70M"
    assert 60e6 <= PRESETS["m4pro"].model.num_params() <= 75e6  # "~68M"
    assert PRESETS["rtx4090"].model.num_params() >= 200e6  # "200M+"
    assert PRESETS["ci"].model.num_params() < 1e6


def test_cards_that_report_a_little_less_still_get_their_preset():
    rtx5060_as_reported = HardwareInfo(
        "cuda", "NVIDIA GeForce RTX 5060", int(7.6 * GIB), bf16=True
    )
    assert select_preset(rtx5060_as_reported, env=NO_ENV).preset.name == "rtx5060"
    a100_as_reported = HardwareInfo(
        "cuda", "NVIDIA A100-SXM4-80GB", int(79.2 * GIB), bf16=True
    )
    assert select_preset(a100_as_reported, env=NO_ENV).preset.name == "a100"


def test_small_devices_fall_back_to_the_cpu_preset():
    small_gpu = HardwareInfo("cuda", "GTX 1650", 4 * GIB, bf16=False)
    choice = select_preset(small_gpu, env=NO_ENV)
    assert (
        choice.preset.name == "cpu" and "no cuda preset fits 4.0 GiB" in choice.reason
    )
    assert select_preset(EXAMPLE_MACHINES[0], env=NO_ENV).preset.name == "cpu"


def test_fast_mode_selects_ci_and_wins_over_an_explicit_preset():
    for value in ("1", "true", "yes"):
        assert fast_mode({"FOUNDRY_FAST": value})
    assert not fast_mode({"FOUNDRY_FAST": "0"}) and not fast_mode({})
    a100 = PRESETS["a100"].target()
    assert (
        select_preset(
            a100, env={"FOUNDRY_FAST": "1", "FOUNDRY_PRESET": "a100"}
        ).preset.name
        == "ci"
    )


def test_foundry_preset_overrides_the_choice():
    choice = select_preset(EXAMPLE_MACHINES[0], env={"FOUNDRY_PRESET": "rtx5060"})
    assert choice.preset.name == "rtx5060" and choice.reason == "FOUNDRY_PRESET=rtx5060"


def test_unknown_preset_names_list_the_valid_ones():
    with pytest.raises(ValueError) as caught:
        select_preset(EXAMPLE_MACHINES[0], env={"FOUNDRY_PRESET": "rtx9090"})
    message = str(caught.value)
    assert "\n" not in message
    assert (
        message == f"unknown preset 'rtx9090': valid presets are {', '.join(PRESETS)}"
    )
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        get_preset("big")


def test_pick_preset_in_the_test_run_is_ci():
    # conftest.py sets FOUNDRY_FAST=1 for the whole test run
    assert pick_preset().name == "ci"


def test_time_estimate_follows_the_flops():
    p = PRESETS["rtx5060"]
    flops = p.train.total_tokens * p.model.flops_per_token(p.train.seq_len)
    assert p.estimate_seconds(tflops=100, mfu=0.5) == pytest.approx(flops / 50e12)
    longer = with_overrides(p, max_steps=2 * p.train.max_steps)
    assert longer.estimate_seconds() == pytest.approx(2 * p.estimate_seconds())


def test_overrides_are_validated():
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        with_overrides(PRESETS["cpu"], batchsize=8)
    with pytest.raises(ValueError, match="exceeds ModelConfig.max_seq_len"):
        with_overrides(PRESETS["cpu"], seq_len=4096)


def test_summary_is_computed_from_the_configs():
    row = PRESETS["cpu"].summary()
    assert row["params (M)"] == float(f"{PRESETS['cpu'].model.num_params() / 1e6:.3g}")
    assert row["precision"] == "float32"
    assert row["est. memory (GiB)"] == round(
        PRESETS["cpu"].estimate_memory().total / GIB, 2
    )


def test_foundry_seed_shifts_every_seed_and_every_cache_key(monkeypatch):
    from foundry_core.pipeline import pretrained_dir

    base = get_preset("ci", env=NO_ENV)
    shifted = get_preset("ci", env={"FOUNDRY_SEED": "3"})
    assert shifted.train.seed == base.train.seed + 3
    assert (
        select_preset(
            base.target(), env={"FOUNDRY_FAST": "1", "FOUNDRY_SEED": "3"}
        ).preset
        == shifted
    )
    keys = {}
    for seed in ("0", "3"):
        monkeypatch.setenv("FOUNDRY_SEED", seed)
        preset = get_preset("ci")
        keys[seed] = (
            preset.data.seed,
            preset.align.seed,
            preset.align.sft.seed,
            pretrained_dir(preset).name,
        )
    assert keys["0"][:2] == (0, 0) and keys["3"][:2] == (3, 3)
    assert keys["3"][2] == keys["0"][2] + 3
    assert keys["0"][3] != keys["3"][3]  # another seed never reuses a trained model


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_foundry_seed_must_be_a_non_negative_integer(value):
    with pytest.raises(ValueError, match="FOUNDRY_SEED must be a non-negative integer"):
        get_preset("ci", env={"FOUNDRY_SEED": value})


def test_foundry_corpus_zh_puts_any_preset_on_the_chinese_track():
    english = {name: get_preset(name, env=NO_ENV) for name in ("ci", "cpu", "a100")}
    chinese = {name: get_preset(name, env={"FOUNDRY_CORPUS": "zh"}) for name in english}
    for name, preset in chinese.items():
        assert preset.data.corpus == "chinese" and preset.data.max_documents is None
        assert preset.data.large_corpus is None  # TinyStories is English
        assert preset.train == english[name].train
    # the guide's rule: twice the English vocabulary, and room for the characters
    assert [p.model.vocab_size for p in chinese.values()] == [4096, 8192, 32768]
    assert get_preset("ci", env={"FOUNDRY_CORPUS": "en"}) == english["ci"]
    assert stage_dir("corpus", chinese["ci"]) != stage_dir("corpus", english["ci"])
    with pytest.raises(ValueError, match="FOUNDRY_CORPUS must be one of en, zh"):
        get_preset("ci", env={"FOUNDRY_CORPUS": "fr"})


def test_foundry_dtype_sets_every_stage_s_precision(monkeypatch):
    monkeypatch.setenv("FOUNDRY_DTYPE", "float32")
    preset = get_preset("cpu")
    assert preset.train.dtype == "float32" and preset.align.dpo.dtype == "float32"
    with pytest.raises(ValueError, match="FOUNDRY_DTYPE"):
        get_preset("cpu", env={"FOUNDRY_DTYPE": "float8"})


def test_foundry_threads():
    import torch

    from foundry_core.hardware import apply_thread_setting

    before = torch.get_num_threads()
    try:
        assert (
            apply_thread_setting({"FOUNDRY_THREADS": "1"}) == 1
            and torch.get_num_threads() == 1
        )
    finally:
        torch.set_num_threads(before)
    assert apply_thread_setting({}) is None
    with pytest.raises(ValueError, match="FOUNDRY_THREADS"):
        apply_thread_setting({"FOUNDRY_THREADS": "0"})


def test_the_big_labs_page_quotes_the_a100_preset_as_it_is():
    """Appendix A2 is a plain page, so its arithmetic on the largest preset is typed in.

    This test keeps it true.
    """
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "book" / "big_labs.md").read_text()
    a100 = PRESETS["a100"]
    params, tokens = a100.model.num_params(), a100.train.total_tokens
    assert f"{params / 1e6:.0f} million parameters" in page
    assert f"{tokens / 1e6:.0f} million tokens in all" in page
    assert f"about {tokens / params:.1f} tokens per parameter" in page
    assert (
        max(p.train.total_tokens / p.model.num_params() for p in PRESETS.values())
        <= tokens / params + 0.05
    )
    flops = 6 * params * tokens
    assert f"${flops / 1e18:.1f} \\times 10^{{18}}$ FLOPs" in page


def test_the_whole_recipe_lives_in_the_preset():
    from pathlib import Path

    import foundry_core

    package = Path(foundry_core.__file__).parent
    branches = [
        f"{path.name}:{number}"
        for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.name\s*==\s*['\"]", line)
    ]
    assert not branches, f"code that branches on a preset's name: {branches}"
    cpu, ci = PRESETS["cpu"], PRESETS["ci"]
    assert cpu.align.sft.lr == cpu.train.lr / 2 and cpu.align.dpo.lr == cpu.train.lr / 5
    assert ci.data.max_documents == 8 and cpu.data.max_documents is None
    assert all(
        run.seq_len <= p.model.max_seq_len
        for p in PRESETS.values()
        for run in (p.align.sft, p.align.reward, p.align.dpo)
    )


def test_any_setting_can_be_overridden_by_name():
    p = PRESETS["ci"]
    q = with_overrides(
        p,
        "sft.max_steps=300",
        "train.lr=1e-3",
        "align.beta=0.3",
        "data.val_fraction=0.2",
        "model.n_kv_heads=1",
        "dpo.compile=true",
        "align.template=alpaca",
    )
    assert (q.align.sft.max_steps, q.train.lr, q.align.beta, q.data.val_fraction) == (
        300,
        1e-3,
        0.3,
        0.2,
    )
    assert (
        q.model.n_kv_heads == 1
        and q.align.dpo.compile is True
        and q.align.template == "alpaca"
    )
    assert isinstance(with_overrides(p, "train.lr=1").train.lr, float)
    assert q.align.reward == p.align.reward and with_overrides(p) == p
    # shorter than its warmup: the warmup shrinks with it
    short = with_overrides(p, "sft.max_steps=5")
    assert (short.align.sft.max_steps, short.align.sft.warmup_steps) == (5, 0)


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "sft.max_step=3",
            "unknown setting 'sft.max_step': did you mean 'sft.max_steps'?",
        ),
        (
            "optimizer.lr=1",
            "section one of model, train, data, align, sft, lora, reward, dpo",
        ),
        ("lr=1e-3", "a setting is <section>.<field>=<value>"),
        (
            "sft.max_steps=-1",
            "TrainConfig.max_steps must be a positive integer, got -1",
        ),
        ("train.compile=maybe", "train.compile is true or false"),
        ("align.beta=0", "AlignSettings.beta must be positive"),
        (
            "data.val_fraction=1.5",
            "DataSettings.val_fraction must be a number with 0 < val_fraction < 1",
        ),
        ("sft.seq_len=4096", "exceeds ModelConfig.max_seq_len"),
        ("align.sft=3", "unknown setting 'align.sft': valid fields: train_per_task"),
    ],
)
def test_a_bad_override_names_what_is_wrong(setting, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        with_overrides(PRESETS["ci"], setting)


def test_foundry_seed_and_dtype_reach_every_run_of_the_recipe():
    shifted = get_preset("cpu", env={"FOUNDRY_SEED": "2", "FOUNDRY_DTYPE": "bfloat16"})
    base = PRESETS["cpu"]
    runs = ("train", "sft", "reward", "dpo")
    assert all(
        getattr(shifted.align, r, shifted.train).seed == base.train.seed + 2
        for r in runs
    )
    assert all(
        getattr(shifted.align, r, shifted.train).dtype == "bfloat16" for r in runs
    )
    assert (shifted.data.seed, shifted.align.seed) == (2, 2)


@pytest.mark.parametrize(
    "preset, card, known",
    [
        ("a100", ("cuda", "NVIDIA A100-SXM4-80GB"), True),
        # another card: its peak is not the preset's
        ("a100", ("cuda", "NVIDIA H100 80GB HBM3"), False),
        ("rtx4090", ("cuda", "NVIDIA GeForce RTX 4090"), True),
        ("rtx5060", ("cuda", "NVIDIA GeForce RTX 4090"), False),
        ("m4pro", ("mps", "Apple M4 Pro"), True),
        ("cpu", ("cpu", "AMD EPYC 9B14"), False),  # a CPU's peak is never assumed
    ],
)
def test_mfu_is_measured_against_a_known_peak_only(preset, card, known):
    from foundry_core.presets import known_peak_tflops

    peak = known_peak_tflops(
        PRESETS[preset], HardwareInfo(card[0], card[1], 8 * GIB, True)
    )
    assert peak == (PRESETS[preset].peak_tflops if known else None)


def test_evaluation_settings_are_part_of_the_recipe():
    assert (
        PRESETS["ci"].evaluation.max_windows == 16
        and PRESETS["cpu"].evaluation.max_windows == 64
    )
    assert (
        with_overrides(
            PRESETS["cpu"], "evaluation.max_windows=8"
        ).evaluation.max_windows
        == 8
    )
    with pytest.raises(
        ValueError, match="EvalSettings.max_windows must be a positive integer"
    ):
        with_overrides(PRESETS["cpu"], "evaluation.max_windows=0")


def test_quantization_settings_are_part_of_the_recipe():
    preset = PRESETS["ci"]
    assert preset.quantize.group_sizes == (32, 64, 128)
    changed = with_overrides(preset, "quantize.group_sizes=(16, 32)")
    assert changed.quantize.group_sizes == (16, 32)
    for bad in ("quantize.group_sizes=()", "quantize.group_sizes=(32, 0)"):
        with pytest.raises(ValueError, match="QuantSettings.group_sizes"):
            with_overrides(preset, bad)
    with pytest.raises(ValueError, match="did you mean 'quantize.group_sizes'"):
        with_overrides(preset, "quantize.group_size=32")
