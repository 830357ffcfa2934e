"""`python -m foundry_core pipeline --preset ci` runs every stage from nothing.

It reports each one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from foundry_core.report_card import STEPS


def test_the_whole_pipeline_from_an_empty_artifacts_folder(tmp_path):
    env = {
        **os.environ,
        "FOUNDRY_ARTIFACTS": str(tmp_path / "artifacts"),
        "FOUNDRY_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "foundry_core", "pipeline", "--preset", "ci"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "artifacts" / "ci" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == list(STEPS)
    metrics = {s["stage"]: s["metrics"] for s in report["stages"]}
    assert all(metrics[name] for name in STEPS)  # every stage reports numbers
    assert metrics["pretrained"]["validation loss"] < 5.5
    assert (
        metrics["sft"]["held-out accuracy (SFT)"]
        > metrics["sft"]["held-out accuracy (base)"]
    )
    assert metrics["quantized"]["int8 MB"] * 3.5 <= metrics["quantized"]["fp32 MB"]
    evaluation = metrics["evaluation"]
    assert (
        evaluation["of them mostly inside SFT training lines"]
        < 0.05 * evaluation["held-out lines"]
    )
    markdown = (tmp_path / "artifacts" / "ci" / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in STEPS)
    # the exports are a cached stage like any other
    gguf = Path(metrics["export"]["gguf file"])
    assert gguf.parent.name.startswith("export-") and gguf.stat().st_size > 0
    hf = gguf.parent / "hf"
    assert all(
        (hf / name).is_file()
        for name in (
            "tokenizer.model",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        )
    )
    assert "preset | `ci`" in (hf / "README.md").read_text()  # the model card
    config = json.loads((hf / "config.json").read_text())
    assert config["max_position_embeddings"] == 128  # SFT's chats, not pretraining's 64
    # a second run reuses every stage (nothing is trained again) and reports the same
    # numbers
    again = subprocess.run(
        [sys.executable, "-m", "foundry_core", "pipeline", "--preset", "ci"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "artifacts" / "ci" / "report.json").read_text())
    assert (
        second["stages"][STEPS.index("sft")]["metrics"]
        == report["stages"][STEPS.index("sft")]["metrics"]
    )
