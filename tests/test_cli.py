"""The command line mirrors the chapters: prepare, pretrain, generate.

Bad input gets one clear line.
"""

import os
import subprocess
import sys


def run(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "foundry_core", *args], capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_help_lists_the_commands():
    out = run("--help").stdout
    assert all(
        command in out
        for command in ("run", "prepare", "pretrain", "generate", "torchrun", "--set")
    )
    assert "--resume" in run("pretrain", "--help").stdout


def test_pretrain_then_generate(tmp_path):
    out = tmp_path / "run"
    first = run(
        "pretrain",
        "--preset",
        "ci",
        "--steps",
        "4",
        "--out",
        str(out),
        "--checkpoint-interval",
        "2",
    )
    assert '"step": 4' in first.stdout
    resumed = run(
        "pretrain", "--preset", "ci", "--steps", "2", "--out", str(out), "--resume"
    )
    assert "resuming from step 4" in resumed.stdout and '"step": 6' in resumed.stdout
    text = run(
        "generate", "--run", str(out), "--prompt", "ROMEO.\n", "--max-new-tokens", "10"
    ).stdout
    assert text.startswith("ROMEO.\n") and len(text) > len("ROMEO.\n")


def test_bad_input_is_one_line():
    result = run("pretrain", "--preset", "rtx9090", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "error: unknown preset 'rtx9090': valid presets are "
        "ci, cpu, rtx3060, rtx5060, rtx4090, a100, m4pro"
    )
    missing = run("generate", "--run", "/nonexistent", "--prompt", "x", check=False)
    assert missing.returncode != 0 and "no checkpoint in /nonexistent" in missing.stderr


def test_fsdp_needs_torchrun():
    result = run("pretrain", "--preset", "ci", "--parallel", "fsdp", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(
        "error: --parallel fsdp shards the model across processes: launch it "
        "with `torchrun --nproc_per_node N"
    )


def test_a_run_from_the_terminal_is_the_artifact_the_chapters_load(
    tmp_path, monkeypatch
):
    import json

    import torch

    from foundry_core import get_preset, with_overrides
    from foundry_core.pipeline import ensure, stage_dir

    settings = ["train.max_steps=6", "sft.max_steps=5"]
    preset = with_overrides(get_preset("ci"), *settings)
    monkeypatch.setenv("FOUNDRY_ARTIFACTS", str(tmp_path / "terminal"))
    flags = [flag for setting in settings for flag in ("--set", setting)]
    pretrained = json.loads(
        run("pretrain", "--preset", "ci", *flags).stdout.splitlines()[-1]
    )
    assert pretrained["chapters load it from"] == str(stage_dir("pretrained", preset))
    sft = json.loads(
        run("run", "sft", "--preset", "ci", *flags).stdout.splitlines()[-1]
    )
    assert sft["folder"] == str(stage_dir("sft", preset)) and sft["step"] == 5
    from_terminal = [
        ensure(stage, preset)[0].state_dict() for stage in ("pretrained", "sft")
    ]
    # the same recipe, built in-process
    monkeypatch.setenv("FOUNDRY_ARTIFACTS", str(tmp_path / "chapters"))
    in_process = [
        ensure(stage, preset)[0].state_dict() for stage in ("pretrained", "sft")
    ]
    for mine, theirs in zip(from_terminal, in_process):
        assert all(torch.equal(mine[name], theirs[name]) for name in mine)
    short = run(
        "pretrain", "--preset", "ci", "--steps", "2", "--out", str(tmp_path / "short")
    )
    assert '"chapters load it from": null' in short.stdout  # not the recipe's whole run


def test_run_refuses_torchrun_and_says_what_to_use():
    import os

    result = subprocess.run(
        [sys.executable, "-m", "foundry_core", "run", "tokens", "--preset", "ci"],
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": "2"},
    )
    assert result.returncode != 0 and "under torchrun, pretrain with" in result.stderr


def test_prepare_reports_the_data_budget_and_warns_about_memorising(tmp_path):
    def prepare(*args):
        command = [sys.executable, "-m", "foundry_core", "prepare", "--preset", "ci"]
        env = {**os.environ, "FOUNDRY_ARTIFACTS": str(tmp_path)}
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env
        ).stdout

    out = prepare()
    assert "tokens ready" in out and "passes over shakespeare" in out
    assert "warning" not in out
    # 20 times the steps: 10 passes
    assert "warning: more than 4 passes" in prepare("--set", "train.max_steps=4000")
