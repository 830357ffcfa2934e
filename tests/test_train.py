"""The Trainer: it learns and resumes exactly (in a fresh process).

It also survives a crash mid-checkpoint and stops cleanly on a NaN loss.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from foundry_core import ModelConfig, TrainConfig
from foundry_core.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from foundry_core.hardware import HardwareInfo
from foundry_core.model import Transformer
from foundry_core.train import (
    Trainer,
    TrainingDiverged,
    lr_at,
    make_optimizer,
    read_history,
)

CPU = HardwareInfo("cpu", "test CPU", None, bf16=False)
MODEL = ModelConfig(
    vocab_size=64,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=96,
    max_seq_len=32,
    dropout=0.1,
)
TRAIN = TrainConfig(
    batch_size=4,
    seq_len=32,
    grad_accum_steps=2,
    max_steps=8,
    warmup_steps=2,
    lr=3e-3,
    min_lr=3e-4,
    eval_interval=4,
    eval_steps=2,
    seed=5,
)
# A learnable sequence: a repeating pattern with noise, so the loss can fall below the
# unigram entropy.
TOKENS = np.array([(i * 7 + (i // 5)) % 64 for i in range(6000)], dtype=np.uint16)


def make_trainer(out_dir=None, config: TrainConfig = TRAIN, **kwargs) -> Trainer:
    torch.manual_seed(0)
    return Trainer(
        Transformer(MODEL),
        config,
        TOKENS[:5000],
        TOKENS[5000:],
        out_dir=out_dir,
        hardware=CPU,
        **kwargs,
    )


def test_learning_rate_schedule():
    # warmup: (step + 1) / warmup_steps
    assert lr_at(0, TRAIN) == pytest.approx(TRAIN.lr / 2)
    assert lr_at(1, TRAIN) == pytest.approx(TRAIN.lr)
    assert lr_at(TRAIN.max_steps, TRAIN) == pytest.approx(TRAIN.min_lr)
    values = [lr_at(s, TRAIN) for s in range(2, TRAIN.max_steps + 1)]
    # cosine decays monotonically
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_skips_norms_and_embeddings():
    model = Transformer(MODEL)
    decay, no_decay = make_optimizer(model, TRAIN).param_groups
    assert decay["weight_decay"] == TRAIN.weight_decay and no_decay["weight_decay"] == 0
    assert any(p is model.embed_tokens.weight for p in no_decay["params"])
    assert any(p is model.norm.weight for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"])


def test_training_lowers_the_loss_below_the_unigram_baseline():
    trainer = make_trainer(
        config=TrainConfig.from_dict(
            {**TRAIN.to_dict(), "max_steps": 60, "eval_interval": 20}
        )
    )
    history = trainer.fit()
    counts = np.bincount(TOKENS[:5000], minlength=64)
    unigram = -np.sum(
        counts / counts.sum() * np.log(np.maximum(counts, 1) / counts.sum())
    )
    assert history[-1]["val_loss"] < unigram - 0.5
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(history[-1])


RESUME_SCRIPT = """
import sys, json, torch
sys.path.insert(0, {tests!r})
from test_train import make_trainer
trainer = make_trainer(out_dir={out!r})
trainer.resume()
history = trainer.fit()
torch.save(trainer.model.state_dict(), {weights!r})
print(json.dumps([h["loss"] for h in history]))
"""


def test_resume_in_a_fresh_process_is_exact(tmp_path):
    straight = make_trainer()
    straight_losses = [h["loss"] for h in straight.fit()]
    first = make_trainer(out_dir=tmp_path / "run")
    first.fit(steps=TRAIN.max_steps // 2)
    first.save()
    # what a fresh process would have: nothing of the first half's state
    torch.manual_seed(12345)
    script = RESUME_SCRIPT.format(
        tests=str(Path(__file__).parent),
        out=str(tmp_path / "run"),
        weights=str(tmp_path / "resumed.pt"),
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    resumed_losses = json.loads(result.stdout.strip().splitlines()[-1])
    # the history is restored, then extended identically
    assert resumed_losses == straight_losses
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed[name]), name
    # the run's curves as data: each step once, across both processes
    logged = read_history(tmp_path / "run")
    assert [h["step"] for h in logged] == list(range(1, TRAIN.max_steps + 1))
    assert [h["loss"] for h in logged] == straight_losses


def test_history_file_restarts_at_the_checkpoint_a_run_resumes_from(tmp_path):
    trainer = make_trainer(out_dir=tmp_path, checkpoint_interval=2, keep_checkpoints=3)
    trainer.fit(steps=6)
    assert read_history(tmp_path) == trainer.history
    again = make_trainer(out_dir=tmp_path)
    # step 2: steps 3-6 of the first attempt are gone
    again.resume(list_checkpoints(tmp_path)[0])
    assert [h["step"] for h in read_history(tmp_path)] == [1, 2]
    with pytest.raises(FileNotFoundError, match="history.jsonl not found"):
        read_history(tmp_path / "elsewhere")


def test_adamw_is_fused_on_a_cpu_and_a_resume_keeps_this_machines_kernel(tmp_path):
    trainer = make_trainer(out_dir=tmp_path, checkpoint_interval=2)
    assert [g["fused"] for g in trainer.optimizer.param_groups] == [True, True]
    # a checkpoint written where AdamW was not fused (another device, an older run)
    for group in trainer.optimizer.param_groups:
        group["fused"], group["foreach"] = None, True
    trainer.fit(steps=2)
    again = make_trainer(out_dir=tmp_path)
    again.resume()
    assert [(g["fused"], g["foreach"]) for g in again.optimizer.param_groups] == [
        (True, None),
        (True, None),
    ]
    again.fit(steps=1)


def test_checkpoints_keep_the_newest_and_survive_a_crash_mid_write(
    tmp_path, monkeypatch
):
    trainer = make_trainer(out_dir=tmp_path, checkpoint_interval=2, keep_checkpoints=2)
    trainer.fit(steps=6)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000004",
        "step-000006",
    ]
    good = latest_checkpoint(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("foundry_core.checkpoint.torch.save", crash)
    with pytest.raises(OSError, match="simulated"):
        trainer.fit(steps=2)  # reaches step 8, whose checkpoint fails half-way
    assert latest_checkpoint(tmp_path) == good
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "a half-written folder is left"
    )
    monkeypatch.undo()
    state = load_checkpoint(good, Transformer(MODEL))
    assert state["step"] == 6


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    trainer = make_trainer(out_dir=tmp_path, checkpoint_interval=2)
    trainer.fit(steps=2)
    with torch.no_grad():
        trainer.model.norm.weight.fill_(float("nan"))
    with pytest.raises(
        TrainingDiverged,
        match=r"the loss became nan at step 2 .* last good checkpoint is .*step-000002",
    ):
        trainer.fit(steps=1)


def test_resume_refuses_a_different_model(tmp_path):
    trainer = make_trainer(out_dir=tmp_path)
    trainer.fit(steps=1)
    trainer.save()
    other = Trainer(
        Transformer(ModelConfig(**{**MODEL.to_dict(), "d_model": 64, "d_ff": 176})),
        TRAIN,
        TOKENS,
        TOKENS,
        out_dir=tmp_path,
        hardware=CPU,
    )
    with pytest.raises(ValueError, match="does not fit this model"):
        other.resume()
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        make_trainer(out_dir=tmp_path / "empty").resume()


def test_mfu_is_recorded_when_the_peak_is_known(tmp_path):
    without = make_trainer().fit(steps=1)
    assert "mfu" not in without[-1]
    trainer = make_trainer(out_dir=tmp_path, peak_tflops=1.0)
    trainer.fit(steps=2)
    flops = MODEL.flops_per_token(TRAIN.seq_len) * trainer.history[-1]["tokens_per_s"]
    assert read_history(tmp_path)[-1]["mfu"] == pytest.approx(flops / 1e12)
