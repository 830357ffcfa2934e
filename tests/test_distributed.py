"""DDP and FSDP on CPU: two processes (gloo) match one with the same global batch.

They follow the same loss curve, and checkpoints saved by a sharded run are ordinary
ones that resume exactly.
"""

import json
import subprocess
import sys

import pytest
import torch

from foundry_core import ModelConfig, TrainConfig
from foundry_core.checkpoint import load_checkpoint
from foundry_core.hardware import HardwareInfo
from foundry_core.model import Transformer
from foundry_core.train import Trainer

SCRIPT = """
import json, os, sys
import numpy as np, torch
from foundry_core import ModelConfig, TrainConfig
from foundry_core.hardware import HardwareInfo
from foundry_core.model import Transformer
from foundry_core.train import Trainer

out, global_batch, parallel, run_dir = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
launched = "WORLD_SIZE" in os.environ
world, rank = int(os.environ.get("WORLD_SIZE", "1")), 0
if launched:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
batch = global_batch // world  # the same global batch either way
model = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                    d_ff=96, max_seq_len=32)
train = TrainConfig(batch_size=batch, seq_len=32, grad_accum_steps=2, max_steps=6,
                    warmup_steps=1, lr=3e-3, min_lr=3e-4, eval_interval=3, eval_steps=2,
                    seed=3)
tokens = np.array([(i * 7 + (i // 5)) % 64 for i in range(6000)], dtype=np.uint16)
cpu = HardwareInfo("cpu", "cpu", None, False)


def trainer(out_dir=None):
    torch.manual_seed(0)
    return Trainer(Transformer(model), train, tokens[:5000], tokens[5000:],
                   hardware=cpu, rank=rank, world_size=world, out_dir=out_dir,
                   parallel=parallel)


straight = trainer()
losses = [h["loss"] for h in straight.fit()]
val_losses = [h["val_loss"] for h in straight.history if "val_loss" in h]
rank_losses = [h.get("rank_loss") for h in straight.history]
full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v
        for k, v in straight.model.state_dict().items()}
# Stop half-way, save (every rank takes part), resume in a new Trainer: the run must
# continue exactly.
first = trainer(run_dir)
first.fit(steps=3)
saved = str(first.save())
second = trainer(run_dir)
second.resume()
resumed = [h["loss"] for h in second.fit()]
if rank == 0:
    Path = __import__("pathlib").Path
    Path(out).write_text(json.dumps({
        "losses": losses, "val": val_losses, "resumed": resumed,
        "rank_losses": rank_losses, "checkpoint": saved,
        "norm.weight": full["norm.weight"].tolist(),
    }))
if launched:
    torch.distributed.destroy_process_group()
"""


def run(tmp_path, name: str, parallel: str, processes: int) -> dict:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out, run_dir = tmp_path / f"{name}.json", tmp_path / f"{name}-run"
    launcher = (
        [sys.executable]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
        ]
    )
    result = subprocess.run(
        [*launcher, str(script), str(out), "8", parallel, str(run_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("distributed")
    return {
        "one": run(tmp, "one", "ddp", 1),
        "ddp": run(tmp, "ddp", "ddp", 2),
        "fsdp": run(tmp, "fsdp", "fsdp", 2),
    }


def assert_same(a: list[float], b: list[float], tolerance: float = 1e-5) -> None:
    assert len(a) == len(b) and all(abs(x - y) < tolerance for x, y in zip(a, b)), (
        a,
        b,
    )


def test_ddp_two_processes_match_one(runs):
    one, two = runs["one"], runs["ddp"]
    assert len(one["losses"]) == 6 and len(one["val"]) == 2
    assert_same(one["losses"], two["losses"])
    # the ranks share the validation batches and average
    assert_same(one["val"], two["val"])
    assert_same(one["norm.weight"], two["norm.weight"])
    # each rank saw different data: its own loss differs from the average the Trainer
    # reports
    assert two["rank_losses"] != two["losses"] and one["rank_losses"] == [None] * 6


def test_fsdp_two_processes_match_ddp_and_one(runs):
    fsdp = runs["fsdp"]
    assert_same(fsdp["losses"], runs["ddp"]["losses"])
    assert_same(fsdp["losses"], runs["one"]["losses"])
    assert_same(fsdp["val"], runs["one"]["val"])
    assert_same(fsdp["norm.weight"], runs["one"]["norm.weight"])


@pytest.mark.parametrize("name", ["one", "ddp", "fsdp"])
def test_resume_continues_exactly(runs, name):
    assert_same(runs[name]["resumed"], runs[name]["losses"], tolerance=1e-6)


def test_an_fsdp_checkpoint_is_an_ordinary_one(runs, tmp_path):
    """An FSDP checkpoint loads into one process's model and resumes there."""
    config = ModelConfig(
        vocab_size=64,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=96,
        max_seq_len=32,
    )
    state = load_checkpoint(runs["fsdp"]["checkpoint"], Transformer(config))
    assert state["step"] == 3 and set(state["optimizer"]["state"]) == set(
        range(len(state["optimizer"]["state"]))
    )
    train = TrainConfig(
        batch_size=8,
        seq_len=32,
        grad_accum_steps=2,
        max_steps=6,
        warmup_steps=1,
        lr=3e-3,
        min_lr=3e-4,
        eval_interval=100,
        seed=3,
    )
    trainer = Trainer(
        Transformer(config),
        train,
        torch.zeros(100, dtype=torch.int64).numpy(),
        hardware=HardwareInfo("cpu", "cpu", None, False),
    )
    assert trainer.resume(runs["fsdp"]["checkpoint"]) == 3


def test_fsdp_without_a_process_group_is_a_clear_error():
    config = ModelConfig(
        vocab_size=64,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=96,
        max_seq_len=32,
    )
    train = TrainConfig(batch_size=2, seq_len=32, max_steps=2, warmup_steps=1)
    cpu = HardwareInfo("cpu", "cpu", None, False)
    with pytest.raises(
        ValueError, match="parallel='fsdp' shards the model across processes.*torchrun"
    ):
        Trainer(
            Transformer(config),
            train,
            torch.zeros(100, dtype=torch.int64).numpy(),
            hardware=cpu,
            parallel="fsdp",
        )
    with pytest.raises(
        ValueError, match="unknown parallel strategy 'zero3': use one of ddp, fsdp"
    ):
        Trainer(
            Transformer(config),
            train,
            torch.zeros(100, dtype=torch.int64).numpy(),
            hardware=cpu,
            parallel="zero3",
        )
