"""The command line mirrors the chapters: prepare, pretrain, generate; bad input is one clear line."""

import subprocess
import sys


def run(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "foundry_core", *args], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_help_lists_the_commands():
    out = run("--help").stdout
    assert all(command in out for command in ("prepare", "pretrain", "generate", "torchrun"))
    assert "--resume" in run("pretrain", "--help").stdout


def test_pretrain_then_generate(tmp_path):
    out = tmp_path / "run"
    first = run("pretrain", "--preset", "ci", "--steps", "4", "--out", str(out), "--checkpoint-interval", "2")
    assert '"step": 4' in first.stdout
    resumed = run("pretrain", "--preset", "ci", "--steps", "2", "--out", str(out), "--resume")
    assert "resuming from step 4" in resumed.stdout and '"step": 6' in resumed.stdout
    text = run("generate", "--run", str(out), "--prompt", "ROMEO.\n", "--max-new-tokens", "10").stdout
    assert text.startswith("ROMEO.\n") and len(text) > len("ROMEO.\n")


def test_bad_input_is_one_line():
    result = run("pretrain", "--preset", "rtx9090", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == ("error: unknown preset 'rtx9090': valid presets are "
                                     "ci, cpu, rtx3060, rtx5060, rtx4090, a100, m4pro")
    missing = run("generate", "--run", "/nonexistent", "--prompt", "x", check=False)
    assert missing.returncode != 0 and "no checkpoint in /nonexistent" in missing.stderr


def test_fsdp_needs_torchrun():
    result = run("pretrain", "--preset", "ci", "--parallel", "fsdp", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: --parallel fsdp shards the model across processes: launch it "
                                            "with `torchrun --nproc_per_node N")
