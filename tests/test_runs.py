"""Run folders describe themselves: load_run rebuilds any stage's model and tokenizer.

It needs nothing but the folder.
"""

import json

import pytest
import torch

from foundry_core import get_preset, with_overrides
from foundry_core.align import RewardModel
from foundry_core.pipeline import (
    TRAINED,
    TrainedStage,
    ensure,
    stage_dir,
    stage_summary,
)
from foundry_core.runs import INFO, RUN_FORMAT, load_run, recipe

# Every trained stage of the ci recipe, each a few steps long: what matters here is what
# the folders hold.
TINY = (
    "train.max_steps=4",
    "sft.max_steps=3",
    "reward.max_steps=3",
    "dpo.max_steps=3",
    "grpo.max_steps=3",
    "ppo.max_steps=3",
    "align.on_policy_prompts=8",
    "align.offline_pairs=32",
    "align.train_per_task=200",
    "align.test_per_task=20",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOUNDRY_ARTIFACTS", str(folder))
        preset = with_overrides(get_preset("ci"), *TINY)
        models = {stage: ensure(stage, preset)[0] for stage in TRAINED}
        yield preset, models, {stage: stage_dir(stage, preset) for stage in TRAINED}


@pytest.mark.parametrize("stage", TRAINED)
def test_load_run_round_trips_every_stage(built, stage):
    preset, models, folders = built
    run = load_run(folders[stage])
    assert run.info["stage"] == stage and run.info["format"] == RUN_FORMAT
    assert run.info["recipe"] == json.loads(json.dumps(recipe(preset)))
    assert isinstance(run.model, RewardModel) == (stage == "reward")
    expected = models[stage].state_dict()
    assert all(
        torch.equal(tensor, expected[name])
        for name, tensor in run.model.state_dict().items()
    )
    assert len(run.tokenizer) == preset.model.vocab_size and run.history[-1]["step"] > 0
    # a checkpoint folder works too
    assert load_run(run.checkpoint).checkpoint == run.checkpoint


@pytest.mark.parametrize("stage", TRAINED)
def test_a_trained_stage_is_its_model_and_history(built, stage):
    preset, models, folders = built
    result = ensure(stage, preset)  # built by the fixture: loaded from the cache
    assert isinstance(result, TrainedStage) and result.history == result[1]
    summary = stage_summary(stage, preset, result)
    assert summary["folder"] == str(folders[stage])
    steps = 4 if stage == "pretrained" else 3
    assert summary["step"] == result.history[-1]["step"] == steps


def test_damaged_and_old_folders_are_refused_clearly(built, tmp_path):
    import shutil

    _, _, folders = built
    copy = tmp_path / "run"
    shutil.copytree(folders["sft"], copy)
    weights = next(copy.glob("step-*")) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="is damaged and cannot be read"):
        load_run(copy)
    info = json.loads((copy / INFO).read_text())
    (copy / INFO).write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(ValueError, match="holds a run in format 99"):
        load_run(copy)
    (copy / INFO).unlink()
    with pytest.raises(ValueError, match="written by an older foundry_core"):
        load_run(copy)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_run(tmp_path / "nothing")
