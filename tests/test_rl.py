"""Reinforcement learning: GAE, the group baseline, the clipped objective and the KL
estimate against their definitions; rollouts; one PPO and one GRPO update moving the
policy the way the advantages say; and the errors bad input raises."""

import copy

import pytest
import torch
from test_align import PLAY  # the same scene the other post-training tests read

from foundry_core import ModelConfig, TrainConfig
from foundry_core.align import CHATML, build_tasks, is_correct
from foundry_core.align.policy_gradient import (
    approx_kl,
    clipped_objective,
    gae,
    group_advantages,
    informative_rows,
    masked_mean,
    token_scores,
)
from foundry_core.align.policy_table import answer_kl, policy_table
from foundry_core.align.respond import sampled_accuracy
from foundry_core.align.rl import PolicyWithValue, RLConfig, RLTrainer
from foundry_core.align.rollout import rollout
from foundry_core.data import Document
from foundry_core.hardware import detect
from foundry_core.model import Transformer
from foundry_core.tokenizer import train_tokenizer


def answer_mask(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """Each row True on one contiguous run (an answer after a prompt), then padding."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, length, dtype=torch.bool)
    for row in range(n):
        start = int(torch.randint(0, length - 1, (1,), generator=g))
        end = int(torch.randint(start + 1, length + 1, (1,), generator=g))
        mask[row, start:end] = True
    return mask


# ---------------------------------------------------------------- the arithmetic


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0)])
def test_gae_matches_its_definition(gamma, lam):
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(6, 9, generator=g), torch.randn(6, 9, generator=g)
    mask = answer_mask(6, 9)
    rewards, values = rewards * mask, values * mask
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for row in range(6):
        steps = mask[row].nonzero().flatten().tolist()
        for i, t in enumerate(steps):
            # A_t = sum over the steps ahead of (gamma * lam)^l * delta_(t+l)
            expected = 0.0
            for ahead, u in enumerate(steps[i:]):
                next_value = values[row, u + 1] if u + 1 in steps else 0.0
                delta = rewards[row, u] + gamma * next_value - values[row, u]
                expected += (gamma * lam) ** ahead * delta
            assert advantages[row, t].item() == pytest.approx(float(expected), abs=1e-5)
            assert returns[row, t].item() == pytest.approx(
                float(expected + values[row, t]), abs=1e-5
            )
    assert (advantages[~mask] == 0).all() and (returns[~mask] == 0).all()


def test_group_advantages_match_their_formula_and_skip_equal_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 2.0, -1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    advantages, skipped = group_advantages(rewards, groups)
    for group in (0, 2):
        r = rewards[groups == group]
        expected = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
        assert torch.allclose(advantages[groups == group], expected, atol=1e-6)
        assert abs(advantages[groups == group].sum()) < 1e-5  # zero mean per group
    # all three answers of group 1 scored the same: no signal, skipped and counted
    assert skipped == 1 and (advantages[groups == 1] == 0).all()
    assert not advantages.isnan().any()


def test_unscaled_group_advantages_are_the_reward_minus_the_group_mean():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    advantages, skipped = group_advantages(rewards, groups, scale=False)
    assert torch.allclose(advantages, torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0]))
    assert skipped == 1


def test_an_empty_or_misshapen_group_is_a_clear_error():
    with pytest.raises(ValueError, match="no rewards"):
        group_advantages(torch.tensor([]), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        group_advantages(torch.zeros(3), torch.zeros(4, dtype=torch.long))


def test_the_clipped_objective_has_no_gradient_where_the_ratio_is_clipped():
    old = torch.zeros(1, 6)
    # ratios e^0.5 and e^-0.5 lie outside [0.8, 1.2]; e^0.05 and e^-0.05 inside
    new = torch.tensor([[0.5, -0.5, 0.05, -0.05, 0.5, -0.5]], requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0, -1.0, 1.0]])
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss, clipped = clipped_objective(new, old, advantages, mask, clip=0.2)
    loss.backward()
    grad = new.grad[0]
    # clipped: the ratio already moved past 1 +- clip in the advantage's direction
    assert grad[0] == 0 and grad[1] == 0
    # inside the clip range the gradient pushes along the advantage
    assert grad[2] < 0 and grad[3] > 0
    # moved the wrong way (the min keeps the unclipped term): still corrected
    assert grad[4] > 0 and grad[5] < 0
    assert clipped.item() == pytest.approx(4 / 6)


def test_the_kl_estimate_is_never_negative_and_zero_for_the_same_policy():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(8, 12, generator=g) * 5
    ref = -torch.rand(8, 12, generator=g) * 5
    assert (approx_kl(logp, ref) >= 0).all()
    assert (approx_kl(logp, logp) == 0).all()
    # its mean over samples from the policy estimates KL(policy || reference)
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    draws = torch.multinomial(p, 200_000, replacement=True, generator=g)
    estimate = approx_kl(p.log()[draws], q.log()[draws]).mean()
    exact = (p * (p / q).log()).sum()
    assert estimate.item() == pytest.approx(exact.item(), abs=0.01)


def test_masked_mean_ignores_the_masked_positions():
    values = torch.tensor([[1.0, 100.0], [3.0, -50.0]])
    mask = torch.tensor([[True, False], [True, False]])
    assert masked_mean(values, mask).item() == 2.0


# ---------------------------------------------------------------- on a model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    text = (
        PLAY * 3 + "Which play is this line from? the first word, the last word\n" * 5
    )
    return train_tokenizer([text], 360, tmp_path_factory.mktemp("tok"))


def tiny(vocab: int, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(
        ModelConfig(
            vocab_size=vocab,
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            d_ff=64,
            max_seq_len=96,
        )
    )


@pytest.fixture(scope="module")
def tasks():
    docs = [Document("hamlet", "Hamlet", PLAY, "test")]
    return build_tasks(docs, train_per_task=2, test_per_task=1, held_out=0.3)


def test_rollouts_keep_the_stop_token_and_mark_the_answer(tokenizer, tasks):
    model = tiny(len(tokenizer))
    prompts = [e.prompt for e in tasks.train[:3]]
    answers = rollout(model, tokenizer, prompts, samples=4, max_new_tokens=6)
    assert len(answers) == 12 and answers.groups.tolist() == sorted([0, 1, 2] * 4)
    assert (answers.answer_lengths >= 1).all() and (answers.answer_lengths <= 6).all()
    eot = CHATML.end_of_turn(tokenizer)
    for row in range(12):
        answer = answers.ids[row][answers.answer[row]].tolist()
        assert (answer[-1] == eot) == bool(answers.finished[row])
        assert tokenizer.decode([t for t in answer if t != eot]) == answers.texts[row]


def test_rollouts_longer_than_the_context_are_a_clear_error(tokenizer, tasks):
    model = tiny(len(tokenizer))
    with pytest.raises(ValueError, match="exceed the model's context"):
        rollout(model, tokenizer, [tasks.train[0].prompt], 2, max_new_tokens=96)
    with pytest.raises(ValueError, match="no prompts"):
        rollout(model, tokenizer, [], 2, 4)


def test_bad_rl_settings_are_clear_errors(tokenizer, tasks):
    with pytest.raises(ValueError, match="kl_coef must be >= 0"):
        RLConfig(kl_coef=-0.1)
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        RLConfig(group_size=1)
    with pytest.raises(ValueError, match="unknown RL algorithm"):
        RLConfig(algorithm="reinforce")
    model = tiny(len(tokenizer))
    config = TrainConfig(batch_size=2, seq_len=96, max_steps=1, warmup_steps=0)
    with pytest.raises(ValueError, match="PPO needs a critic"):
        RLTrainer(
            model,
            model,
            config,
            RLConfig(algorithm="ppo"),
            tasks.train,
            rules,
            tokenizer,
        )
    with pytest.raises(ValueError, match="same tokenizer"):
        RLTrainer(
            model,
            tiny(len(tokenizer) + 1),
            config,
            RLConfig(),
            tasks.train,
            rules,
            tokenizer,
        )


def test_a_reward_model_with_another_tokenizer_is_a_clear_error(tokenizer):
    from foundry_core.align import RewardModel
    from foundry_core.pipeline.rl_stages import check_reward_model

    with pytest.raises(ValueError, match="reward model has 400 tokens"):
        check_reward_model(RewardModel(tiny(400)), tokenizer)
    check_reward_model(RewardModel(tiny(len(tokenizer))), tokenizer)


def rules(examples, answers) -> torch.Tensor:
    return torch.tensor([float(is_correct(e, a)) for e, a in zip(examples, answers)])


def common_first_word(examples, answers) -> torch.Tensor:
    """1 for answers starting with the batch's most common first word: some yes,
    some no, even from an untrained model."""
    words = [t.split()[0] if t.split() else "" for t in answers]
    common = max(set(words), key=words.count)
    return torch.tensor([float(w == common) for w in words])


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_an_update_makes_the_rewarded_answers_more_likely(algorithm, tokenizer, tasks):
    """The definition of a policy-gradient step: answers with a positive advantage
    become more likely, those with a negative one less."""
    sft = tiny(len(tokenizer))
    policy = copy.deepcopy(sft)
    if algorithm == "ppo":
        policy = PolicyWithValue.from_policy(policy)
    config = TrainConfig(
        batch_size=4,
        seq_len=96,
        max_steps=1,
        warmup_steps=0,
        lr=3e-3,
        dtype="float32",
        grad_clip=0,
    )
    rl = RLConfig(
        algorithm=algorithm,
        group_size=8,
        epochs=1,
        minibatches=1,
        max_new_tokens=4,
        kl_coef=0.0,
    )

    trainer = RLTrainer(
        policy, sft, config, rl, tasks.train, common_first_word, tokenizer,
        hardware=detect("cpu"),
    )  # fmt: skip
    torch.manual_seed(0)
    experience = trainer.experience(tasks.train[:4])
    rewards = experience.rewards[experience.rows]
    assert 0 < rewards.sum() < len(rewards)
    if algorithm == "ppo":  # a critic that expects nothing: advantages follow rewards
        experience.advantages, experience.returns = trainer._ppo_advantages(
            rewards,
            experience.old_logp,
            experience.ref_logp,
            torch.zeros_like(experience.old_logp),
            experience.mask,
        )
    before = (experience.old_logp * experience.mask).sum(-1)
    trainer._optimise(experience)
    with torch.no_grad():
        after = (token_scores(policy, experience.ids)[0] * experience.mask).sum(-1)
    moved = after - before
    assert moved[rewards == 1].mean() > 0 > moved[rewards == 0].mean(), moved


def test_grpo_runs_on_the_trainer_loop_with_history(tokenizer, tasks, tmp_path):
    sft = tiny(len(tokenizer))
    config = TrainConfig(
        batch_size=2, seq_len=96, max_steps=2, warmup_steps=0, dtype="float32"
    )
    rl = RLConfig(group_size=4, max_new_tokens=4)
    trainer = RLTrainer(
        copy.deepcopy(sft),
        sft,
        config,
        rl,
        tasks.train,
        common_first_word,
        tokenizer,
        watch={"correct": rules},
        held_out=tasks.test,
        out_dir=tmp_path,
        hardware=detect("cpu"),
    )
    history = trainer.fit()
    # the held-out prompts are answered greedily and scored at the last step
    assert "val_reward" in history[-1] and "val_correct" in history[-1]
    assert [r["step"] for r in history] == [1, 2]
    for key in (
        "reward",
        "kl",
        "entropy",
        "clip_fraction",
        "correct",
        "skipped_groups",
    ):
        assert key in history[0], key
    assert history[0]["kl"] == pytest.approx(0, abs=1e-6)  # the policy starts at sft
    assert trainer.save().exists()


def test_a_step_where_every_group_agrees_changes_nothing_and_is_counted(
    tokenizer, tasks
):
    """All answers scored the same: no advantage anywhere. The step is counted, the
    groups are skipped (not NaN), and the weights stay as they were."""
    sft = tiny(len(tokenizer))
    policy = copy.deepcopy(sft)
    config = TrainConfig(
        batch_size=2, seq_len=96, max_steps=1, warmup_steps=0, dtype="float32"
    )
    trainer = RLTrainer(
        policy,
        sft,
        config,
        RLConfig(group_size=4, max_new_tokens=4),
        tasks.train,
        lambda examples, answers: torch.ones(len(answers)),
        tokenizer,
        hardware=detect("cpu"),
    )
    [record] = trainer.fit()
    assert record["skipped_groups"] == 2 and record["reward"] == 1.0
    for before, after in zip(sft.parameters(), policy.parameters()):
        assert torch.equal(before, after)


def test_the_rl_settings_of_a_preset_are_validated_and_overridable():
    from foundry_core import get_preset, with_overrides
    from foundry_core.pipeline.rl_stages import rl_config

    preset = with_overrides(get_preset("ci"), "grpo.max_steps=5", "align.group_size=4")
    assert (
        preset.align.grpo.max_steps == 5 and rl_config(preset, "grpo").group_size == 4
    )
    assert rl_config(preset, "ppo").kl_coef == preset.align.ppo_kl
    for bad, message in (
        ("align.grpo_kl=-0.1", "grpo_kl must be >= 0"),
        ("align.rl_temperature=0", "rl_temperature must be > 0"),
        ("align.clip=1.5", "clip must be"),
        ("ppo.lr=-1", "lr"),
    ):
        with pytest.raises(ValueError, match=message):
            with_overrides(get_preset("ci"), bad)


# ---------------------------------------------------------------- measuring policies


def test_only_the_groups_that_teach_something_are_kept():
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    advantages, skipped = group_advantages(rewards, groups)
    assert skipped == 1
    assert informative_rows(groups, advantages).tolist() == [0, 1, 2, 6, 7]
    nothing = torch.zeros(4)
    assert informative_rows(torch.tensor([0, 0, 1, 1]), nothing).numel() == 0


def test_policy_table_compares_models_on_the_same_questions(tokenizer, tasks):
    reference, other = tiny(len(tokenizer)), tiny(len(tokenizer), seed=1)
    examples = tasks.train + tasks.test
    rows = policy_table(
        {"ref": reference, "copy": copy.deepcopy(reference), "other": other},
        "ref",
        tokenizer,
        examples,
        max_new_tokens=4,
        training_tokens={"other": 123},
    )
    by_name = {r["model"]: r for r in rows}
    assert list(by_name) == ["ref", "copy", "other"]
    # a model is 0 nats from itself and from an exact copy, and no model is below 0
    assert by_name["ref"]["KL from ref"] == pytest.approx(0, abs=1e-6)
    assert by_name["copy"]["KL from ref"] == pytest.approx(0, abs=1e-6)
    assert by_name["other"]["KL from ref"] > 0.01
    assert by_name["copy"]["vs ref"].mean == 0 and by_name["copy"]["vs ref"].n == len(
        examples
    )
    low, high = by_name["ref"]["interval"]
    assert 0 <= low <= by_name["ref"]["accuracy"] <= high <= 1
    assert 1 <= by_name["other"]["answer tokens"] <= 5  # up to 4 tokens + end of turn
    assert by_name["other"]["training tokens"] == 123
    assert by_name["ref"]["training tokens"] == 0
    with pytest.raises(ValueError, match="reference 'sft' is not among"):
        policy_table({"ref": reference}, "sft", tokenizer, examples, 4)


def test_answer_kl_is_exact_and_ignores_the_prompt(tokenizer):
    model, other = tiny(len(tokenizer)), tiny(len(tokenizer), seed=1)
    ids = torch.randint(4, len(tokenizer), (3, 10))
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, 6:] = True
    kl = answer_kl(model, other, ids, mask, batch_size=2)
    with torch.no_grad():
        logp = model(ids[:, :-1])[0].log_softmax(-1)
        ref = other(ids[:, :-1])[0].log_softmax(-1)
    # KL(p || q) at positions 5..8, which predict the answer tokens 6..9
    expected = (logp.exp() * (logp - ref)).sum(-1)[:, 5:].sum(-1)
    assert torch.allclose(kl, expected, atol=1e-5)


def test_sampled_accuracy_is_a_share_per_question(tokenizer, tasks):
    model = tiny(len(tokenizer))
    shares = sampled_accuracy(model, tokenizer, tasks.train, 3, max_new_tokens=4)
    assert len(shares) == len(tasks.train)
    assert all(round(s * 3, 6) in (0, 1, 2, 3) for s in shares)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        sampled_accuracy(model, tokenizer, tasks.train, 0)


def test_the_rl_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foundry_core.viz.rl import (
        plot_clip,
        plot_gae_lambdas,
        plot_group_advantages,
        plot_overoptimisation,
    )

    groups = torch.tensor([0, 0, 1, 1])
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    figures = [
        plot_group_advantages(rewards, groups, group_advantages(rewards, groups)[0]),
        plot_gae_lambdas({0.0: [0.1, 0.2], 1.0: [0.5, 0.4]}, ["a", "b"]),
        plot_clip(0.2),
        plot_overoptimisation(
            [
                {"kl": 0, "reward": 1, "correct": 0.3},
                {"kl": 1, "reward": 2, "correct": 0.1},
            ]
        ),
    ]
    # the clip figure: two panels, each with the plain and the clipped objective
    assert len(figures[2].axes) == 2 and len(figures[2].axes[0].lines) >= 2
    for figure in figures:
        plt.close(figure)
