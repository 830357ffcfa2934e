"""Evaluation: perplexity's windows and values, multiple choice by likelihood.

Also contamination, and the errors that bad input raises.
"""

import math

import numpy as np
import pytest
import torch

from foundry_core import ModelConfig
from foundry_core.align import encode_prompt
from foundry_core.align.tasks import Line, make_example
from foundry_core.evaluate import (
    ChoiceItem,
    contamination,
    evaluate_models,
    multiple_choice_accuracy,
    perplexity,
    play_choice_items,
    window_plan,
)
from foundry_core.model import Transformer
from foundry_core.tokenizer import train_tokenizer

VOCAB = 320
TEXT = (
    "Who's there? Stand and unfold yourself. Long live the king, and all his court!\n"
    "A little more than kin, and less than kind. "
    "The time is out of joint: O cursed spite,\n"
    "Which play is this line from? What is the first word of this line? "
    "Hamlet Macbeth Othello\n"
)


def make_model(seed: int = 0, **overrides) -> Transformer:
    values = dict(
        vocab_size=VOCAB,
        d_model=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        d_ff=64,
        max_seq_len=96,
        tie_embeddings=False,
    )
    torch.manual_seed(seed)
    return Transformer(ModelConfig(**{**values, **overrides})).eval()


def context_free(model: Transformer) -> Transformer:
    """Zero every attention output: each position then sees only its own token."""
    for block in model.layers:
        torch.nn.init.zeros_(block.self_attn.o_proj.weight)
    return model


def tokens(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=n).astype(np.uint16)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer([TEXT * 3], VOCAB, tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize(
    "n, seq_len, stride", [(40, 8, 8), (40, 8, 3), (41, 8, 1), (9, 8, 4), (100, 16, 5)]
)
def test_every_token_is_scored_exactly_once(n, seq_len, stride):
    plan = window_plan(n, seq_len, stride)
    scored = [
        p for start, skip in plan for p in range(start + 1 + skip, start + seq_len + 1)
    ]
    # each target once, in order; token 0 has nothing to be predicted from
    assert scored == list(range(1, n))
    assert plan[0] == (0, 0) and all(start + seq_len < n for start, _ in plan)
    # scored with >= seq_len - stride context
    assert all(skip >= seq_len - stride for _, skip in plan[1:])


def test_a_model_that_knows_nothing_has_perplexity_equal_to_its_vocabulary():
    model = make_model()
    # every logit 0: the uniform distribution
    torch.nn.init.zeros_(model.lm_head.weight)
    for stride in (None, 5):
        assert perplexity(
            model, tokens(60), seq_len=16, batch_size=3, stride=stride
        ) == pytest.approx(VOCAB, rel=1e-4)


def test_stride_changes_nothing_for_a_model_without_context():
    model, ids = context_free(make_model()), tokens(45)
    # the whole text fits in one pass: the reference value, computed directly
    with torch.no_grad():
        logprobs = model(torch.from_numpy(ids[:-1].astype(np.int64))[None])[
            0
        ].log_softmax(-1)[0]
    expected = math.exp(
        -logprobs.gather(1, torch.from_numpy(ids[1:].astype(np.int64))[:, None])
        .mean()
        .item()
    )
    for stride in (8, 3, 1):
        assert perplexity(
            model, torch.from_numpy(ids.astype(np.int64)), 8, 4, stride
        ) == pytest.approx(expected, 1e-5)
    assert model.training is False
    model.train()
    perplexity(model, ids, 8)
    assert model.training, "the caller's mode is restored"


def test_multiple_choice_picks_the_most_likely_option(tokenizer):
    model = make_model(seed=3)
    for p in model.parameters():  # larger weights: options differ clearly in likelihood
        p.data *= 4
    items = [
        ChoiceItem(
            "Which play is this line from?\nA little more than kin",
            ("Hamlet", "Macbeth", "Othello"),
            0,
        ),
        ChoiceItem(
            "What is the first word of this line?\nWho's there?",
            ("Who's", "there", "king"),
            2,
        ),
    ]
    end = tokenizer.piece_to_id("<|im_end|>")

    # one sequence, no padding, no batching
    def loglik(prompt: str, option: str) -> tuple[float, int]:
        context, answer = (
            encode_prompt(tokenizer, prompt),
            tokenizer.encode(option) + [end],
        )
        ids = torch.tensor(context + answer)[None]
        with torch.no_grad():
            logprobs = model(ids[:, :-1])[0].log_softmax(-1)[0, len(context) - 1 :]
        return logprobs.gather(1, torch.tensor(answer)[:, None]).sum().item(), len(
            answer
        )

    result = multiple_choice_accuracy(model, tokenizer, items, batch_size=2)
    for item, pick, normalized in zip(items, result.picks, result.normalized_picks):
        scores = [loglik(item.prompt, option) for option in item.options]
        assert pick == max(range(3), key=lambda i: scores[i][0])
        assert normalized == max(range(3), key=lambda i: scores[i][0] / scores[i][1])
    # with this model the two rules disagree: both are checked
    assert result.picks != result.normalized_picks
    assert (
        result.accuracy
        == sum(p == item.answer for p, item in zip(result.picks, items)) / 2
    )


def test_play_questions_become_choice_items():
    plays = ["Hamlet", "Macbeth", "Othello", "King Lear", "Twelfth Night"]
    line = Line("Macbeth", "Lady Macbeth", "Out, damned spot! out, I say!")
    examples = [make_example("play", line), make_example("first_word", line)]
    items = play_choice_items(examples, plays, n_options=3, seed=1)
    assert len(items) == 1 and items[0].options[items[0].answer] == "Macbeth"
    assert len(set(items[0].options)) == 3 and set(items[0].options) <= set(plays)
    assert items == play_choice_items(examples, plays, n_options=3, seed=1)
    with pytest.raises(ValueError, match="n_options"):
        play_choice_items(examples, plays[:2], n_options=3)


def test_contamination_finds_a_copied_item_and_not_an_unrelated_one():
    train = [
        "Who's there? Stand and unfold yourself, "
        "for the night is cold and I am sick at heart.",
        "Long live the king, and all his court and all his men and all his horses.",
    ]
    evals = [
        # copied, re-punctuated
        "STAND and unfold yourself -- for the night is cold, and I am sick at heart",
        "Tomorrow and tomorrow and tomorrow creeps in this petty pace from day to day",
        # half copied
        "Long live the king and all his court, "
        "said nobody at the feast that night ever",
        "Long live the king",  # shorter than n: checked as one phrase
        "",
    ]
    report = contamination(evals, train, n=5)
    assert (
        report.shares[0] == 1.0
        and report.shares[1] == 0.0
        and 0 < report.shares[2] < 0.5
    )
    assert report.shares[3] == 1.0 and report.shares[4] == 0.0
    assert report.overlapping == 3 and report.flagged == [0, 3]
    assert "3 of 5 items" in report.summary()


def test_a_table_of_models(tokenizer):
    line = Line("Hamlet", "Ham", "A little more than kin, and less than kind.")
    examples = [make_example(task, line) for task in ("play", "first_word")]
    rows = evaluate_models(
        {"tiny": make_model()},
        tokenizer,
        tokens(40),
        examples,
        seq_len=16,
        max_new_tokens=2,
        plays=["Hamlet", "Macbeth", "Othello"],
    )
    assert [row["model"] for row in rows] == ["tiny"]
    assert {
        "perplexity",
        "accuracy",
        "accuracy_play",
        "accuracy_first_word",
        "choice_accuracy",
    } <= set(rows[0])


def test_bad_input_is_a_clear_error():
    model = make_model()
    with pytest.raises(ValueError, match="larger than the model's context"):
        perplexity(model, tokens(200), seq_len=97)
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, tokens(16), seq_len=16)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tokens(40), seq_len=16, stride=17)
    with pytest.raises(ValueError, match="flat array"):
        perplexity(model, tokens(40).reshape(2, 20), seq_len=8)
    with pytest.raises(ValueError, match="max_windows"):
        perplexity(model, tokens(40), seq_len=8, max_windows=0)
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            contamination(["a b"], ["a b"], n=n)
    with pytest.raises(ValueError, match="answer index"):
        ChoiceItem("question", ("only one",), 0)


def test_kl_to_reference_is_zero_for_the_same_model_and_grows_with_the_change():
    from foundry_core.evaluate import kl_to_reference

    tokens = torch.randint(0, VOCAB, (400,), generator=torch.Generator().manual_seed(0))
    model = make_model()
    assert kl_to_reference(model, model, tokens, 32) == 0.0
    distances = []
    for scale in (1e-3, 1e-2):
        nudged = make_model()
        with torch.no_grad():
            for p in nudged.parameters():
                p.add_(
                    scale
                    * torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
                )
        distances.append(kl_to_reference(model, nudged, tokens, 32, max_windows=4))
    assert 0 < distances[0] < distances[1]


def test_paired_difference_interval():
    from foundry_core.evaluate import paired_difference

    same = paired_difference([1, 0, 1, 0], [1, 0, 1, 0])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    before = [0] * 100 + [1] * 100
    # 30 of 200 questions fixed
    better = paired_difference(before, [1] * 30 + [0] * 70 + [1] * 100)
    assert better.mean == pytest.approx(0.15) and better.low > 0 and better.high < 0.3
    # +10 -8: cannot tell
    noisy = paired_difference(before, [1] * 10 + [0] * 90 + [0] * 8 + [1] * 92)
    assert noisy.low < 0 < noisy.high and "n=200" in str(noisy)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1, 0], [1])


def test_proportion_interval_covers_the_truth_about_95_percent_of_the_time():
    from foundry_core.evaluate import proportion_interval

    low, high = proportion_interval(48, 150)
    assert 0.25 < low < 0.32 < high < 0.40  # 0.32 of 150: barely above a chance of 0.25
    assert (
        proportion_interval(0, 10)[0] == 0.0 and proportion_interval(10, 10)[1] == 1.0
    )
    rng = np.random.default_rng(0)
    counts = rng.binomial(150, 0.3, size=2000)
    covered = np.mean(
        [
            lo <= 0.3 <= hi
            for lo, hi in (proportion_interval(int(k), 150) for k in counts)
        ]
    )
    assert 0.93 < covered < 0.97
    with pytest.raises(ValueError, match="successes"):
        proportion_interval(5, 4)
