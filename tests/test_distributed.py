"""DDP on CPU: two processes (gloo) follow the same loss curve as one process with the same global batch."""

import json
import subprocess
import sys


SCRIPT = """
import json, os, sys
import numpy as np, torch
from foundry_core import ModelConfig, TrainConfig
from foundry_core.hardware import HardwareInfo
from foundry_core.model import Transformer
from foundry_core.train import Trainer

world = int(os.environ.get("WORLD_SIZE", "1"))
rank = 0
if world > 1:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
batch = int(sys.argv[2]) // world  # the same global batch either way
model = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, max_seq_len=32)
train = TrainConfig(batch_size=batch, seq_len=32, grad_accum_steps=2, max_steps=6, warmup_steps=1, lr=3e-3,
                    min_lr=3e-4, eval_interval=100, seed=3)
tokens = np.array([(i * 7 + (i // 5)) % 64 for i in range(6000)], dtype=np.uint16)
torch.manual_seed(0)
trainer = Trainer(Transformer(model), train, tokens, None, hardware=HardwareInfo("cpu", "cpu", None, False),
                  rank=rank, world_size=world)
losses = [h["loss"] for h in trainer.fit()]
if rank == 0:
    state = {k: v.tolist() for k, v in trainer.model.state_dict().items() if k == "norm.weight"}
    Path = __import__("pathlib").Path
    Path(sys.argv[1]).write_text(json.dumps({"losses": losses, **state}))
if world > 1:
    torch.distributed.destroy_process_group()
"""


def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(script), str(single), "8"], check=True, capture_output=True, text=True)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(double), "8"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert len(one["losses"]) == len(two["losses"]) == 6
    for a, b in zip(one["losses"], two["losses"]):
        assert abs(a - b) < 1e-5, (one["losses"], two["losses"])
    for a, b in zip(one["norm.weight"], two["norm.weight"]):
        assert abs(a - b) < 1e-5
