"""Post-training: chat templates and loss masks, task splits, reward and DPO losses.

Also the errors that bad input raises.
"""

import math

import pytest
import torch

from foundry_core import ModelConfig
from foundry_core.align import (
    ALPACA,
    CHATML,
    ChatDataset,
    PairDataset,
    PreferencePair,
    RewardModel,
    add_reference_logprobs,
    bradley_terry_loss,
    build_tasks,
    dpo_loss,
    encode_chat,
    encode_prompt,
    idiom_lines,
    is_correct,
    make_dpo_loss,
    on_policy_pairs,
    play_lines,
    preference_pairs,
    render,
    reward_loss,
    sequence_logprobs,
    sft_targets,
)
from foundry_core.align.sft import IGNORE
from foundry_core.data import Document
from foundry_core.model import Transformer
from foundry_core.tokenizer import train_tokenizer

PLAY = """HAMLET

ACT I.

SCENE I. Elsinore.

[Enter Bernardo.]

Ber.
Who's there? Stand and unfold yourself.
Long live the king, and all his court!

Ham.
A little more than kin, and less than kind.
The time is out of joint: O cursed spite,
That ever I was born to set it right!

LADY MACBETH.
Out, damned spot! out, I say!
"""


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    text = (
        PLAY * 3
        + (
            "Which play is this line from? "
            "What is the first word of this line? the last word\n"
        )
        * 5
    )
    return train_tokenizer([text], 320, tmp_path_factory.mktemp("tok"))


CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Who's there?"},
    {"role": "assistant", "content": "Bernardo"},
    {"role": "user", "content": "And the king?"},
    {"role": "assistant", "content": "Long live the king"},
]


def trained_text(tokenizer, ids, trained, eot):
    return tokenizer.decode([i for i, t in zip(ids, trained) if t and i != eot])


@pytest.mark.parametrize("template", [CHATML, ALPACA])
def test_loss_mask_covers_exactly_the_assistant_answers_and_their_end(
    tokenizer, template
):
    for chat in (CHAT[1:3], CHAT):
        ids, trained = encode_chat(tokenizer, chat, template)
        eot = template.end_of_turn(tokenizer)
        answers = [m["content"] for m in chat if m["role"] == "assistant"]
        # every trained token is answer text or the end-of-turn that closes an answer,
        # and all of them are
        assert [i for i, t in zip(ids, trained) if t and i == eot] == [eot] * len(
            answers
        )
        assert trained_text(tokenizer, ids, trained, eot) == "".join(answers)
        # the trained run of each answer starts right after the assistant header and
        # ends at end-of-turn
        runs, start = [], None
        for i, t in enumerate(trained + [False]):
            if t and start is None:
                start = i
            if not t and start is not None:
                runs.append((start, i))
                start = None
        assert len(runs) == len(answers)
        for (a, b), answer in zip(runs, answers):
            assert ids[b - 1] == eot and tokenizer.decode(ids[a : b - 1]) == answer
        prompt_ids = encode_prompt(tokenizer, chat[:-1], template)
        # inference sees the same prefix that training saw
        assert ids[: len(prompt_ids)] == prompt_ids


def test_sft_targets_are_shifted_by_one_and_an_off_by_one_is_caught(tokenizer):
    ids, trained = encode_chat(tokenizer, CHAT[1:3], CHATML)
    inputs, targets = sft_targets(ids, trained)
    assert len(inputs) == len(targets) == len(ids) - 1
    kept = [t for t in targets if t != IGNORE]
    assert kept == [i for i, keep in zip(ids, trained) if keep]
    # the first trained target is predicted from the last prompt token (the newline of
    # the header)
    first = next(i for i, t in enumerate(targets) if t != IGNORE)
    assert tokenizer.decode(inputs[: first + 1]).endswith("<|im_start|>assistant\n")
    shifted_wrong = [t if keep else IGNORE for t, keep in zip(ids[1:], trained[:-1])]
    assert shifted_wrong != targets


def test_render_and_chat_errors(tokenizer):
    text = render(CHAT[1:3])
    assert (
        text
        == "<|im_start|>user\nWho's there?<eot>\n<|im_start|>assistant\nBernardo<eot>\n"
    )
    assert (
        render(CHAT[1:3], ALPACA)
        == "### Instruction:\nWho's there?\n\n### Response:\nBernardo<eot>\n\n"
    )
    with pytest.raises(ValueError, match="no assistant turn"):
        encode_chat(tokenizer, CHAT[:2])
    with pytest.raises(ValueError, match="role in"):
        encode_chat(tokenizer, [{"role": "bot", "content": "hi"}])
    with pytest.raises(ValueError, match="unknown chat template"):
        encode_chat(tokenizer, CHAT, "vicuna")


def test_chats_longer_than_the_context_are_dropped_and_counted(tokenizer):
    short = CHAT[1:3]
    long = [
        {"role": "user", "content": "Who's there? " * 40},
        {"role": "assistant", "content": "Bernardo"},
    ]
    limit = len(encode_chat(tokenizer, short)[0]) + 2
    dataset = ChatDataset(tokenizer, [short, long, short], max_len=limit)
    assert len(dataset) == 2 and dataset.dropped == 1
    inputs, targets = dataset.collate([dataset[0], dataset[1]])
    assert inputs.shape == targets.shape
    with pytest.raises(ValueError, match="longer than the context"):
        ChatDataset(tokenizer, [long], max_len=limit)


def test_lines_and_task_splits_never_overlap():
    docs = [Document("hamlet", "Hamlet", PLAY, "test")]
    lines = play_lines(docs)
    assert {(ln.speaker, ln.text) for ln in lines} >= {
        ("Ber", "Who's there? Stand and unfold yourself."),
        ("Lady Macbeth", "Out, damned spot! out, I say!"),
    }
    assert all("[" not in ln.text and ln.text != "HAMLET" for ln in lines)
    splits = build_tasks(
        docs * 1, train_per_task=2, test_per_task=1, held_out=0.3, seed=0
    )
    train_lines = {e.line.text for e in splits.train}
    assert not train_lines & {e.line.text for e in splits.test}
    first = next(e for e in splits.train + splits.test if e.task == "first_word")
    assert is_correct(first, f" {first.answer.upper()}.") and not is_correct(
        first, first.answer + " and more"
    )
    with pytest.raises(ValueError, match="no spoken lines"):
        build_tasks(
            [
                Document(
                    "poem", "Poem", "Shall I compare thee\nto a summer's day?", "test"
                )
            ],
            1,
            1,
        )


IDIOMS = "\n\n".join(
    f"{idiom}\n拼音：-\n出处：汉·某人《{book}·卷一》一段话。"
    for idiom, book in [
        ("画蛇添足", "战国策"),
        ("守株待兔", "韩非子"),
        ("卧薪尝胆", "史记"),
        ("破釜沉舟", "史记"),
        ("指鹿为马", "史记"),
        ("温故知新", "论语"),
        ("不求甚解", "陶渊明集"),
    ]
)


def test_chinese_tasks_ask_for_the_book_and_the_first_and_last_character():
    docs = [Document("idioms_000", "成语", IDIOMS + "\n\n没有出处\n释义：-", "test")]
    lines = idiom_lines(docs, books=3)
    # the three most quoted books; entries without a source give no line
    assert {ln.play for ln in lines} == {"史记", "战国策", "韩非子"}
    assert all(ln.is_idiom and len(ln.words) == 4 for ln in lines)
    splits = build_tasks(docs, train_per_task=2, test_per_task=1, held_out=0.3)
    assert set(splits.plays) == {"史记", "战国策", "韩非子", "论语", "陶渊明集"}
    by_task = {e.task: e for e in splits.train + splits.test}
    idiom = by_task["last_word"].line.text
    assert by_task["last_word"].prompt == f"这个成语的最后一个字是什么？\n{idiom}"
    assert by_task["last_word"].answer == idiom[-1]
    assert by_task["first_word"].answer == by_task["first_word"].line.text[0]
    assert by_task["play"].prompt.startswith("这个成语出自哪部书？")
    # Chinese punctuation around an answer is ignored, like English punctuation
    assert is_correct(by_task["play"], f"《{by_task['play'].answer}》。")


def test_preference_pairs_are_wrong_in_realistic_ways():
    docs = [Document("hamlet", "Hamlet", PLAY, "test")]
    splits = build_tasks(docs, train_per_task=3, test_per_task=1, held_out=0.3)
    pairs = preference_pairs(splits.train + splits.test, ["Hamlet", "Macbeth"], seed=0)
    for pair, example in zip(pairs, splits.train + splits.test):
        assert pair.chosen == example.answer and not is_correct(example, pair.rejected)
        assert pair.kind in {"rambling", "wrong play", "wrong word"}


def test_identical_pairs_are_dropped_with_a_count(tokenizer):
    pairs = [
        PreferencePair("Who's there?", "Bernardo", "Bernardo.", "t", "k"),
        PreferencePair("Who's there?", "Bernardo", "Horatio", "t", "k"),
    ]
    dataset = PairDataset(tokenizer, pairs, max_len=256)
    assert len(dataset) == 1 and dataset.dropped == {
        "identical answers": 1,
        "too long": 0,
    }
    with pytest.raises(ValueError, match="no usable preference pairs"):
        PairDataset(tokenizer, pairs[:1], max_len=64)


def test_bradley_terry_and_dpo_losses_match_hand_computed_values():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    expected = (
        -math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(0.5)))
    ) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(
        expected, rel=1e-6
    )
    # policy log-probs -3, -7 against reference -4, -6 with beta 0.5: rewards +0.5, -0.5
    loss, c, r = dpo_loss(
        torch.tensor([-3.0]),
        torch.tensor([-7.0]),
        torch.tensor([-4.0]),
        torch.tensor([-6.0]),
        0.5,
    )
    assert c.item() == pytest.approx(0.5) and r.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)
    same = torch.tensor([-5.0, -2.0])
    assert dpo_loss(same, same + 1, same, same + 1, 0.1)[0].item() == pytest.approx(
        math.log(2)
    )
    assert bradley_terry_loss(same, same).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(same, same, same, same, 0.0)


def tiny_model(vocab):
    torch.manual_seed(0)
    return Transformer(
        ModelConfig(
            vocab_size=vocab,
            d_model=32,
            n_layers=1,
            n_heads=2,
            n_kv_heads=1,
            d_ff=64,
            max_seq_len=256,
        )
    )


def test_sequence_logprobs_sum_over_the_answer_only(tokenizer):
    model = tiny_model(len(tokenizer)).eval()
    pairs = [
        PreferencePair("Who's there?", "Bernardo", "Horatio and Marcellus", "t", "k")
    ]
    dataset = PairDataset(tokenizer, pairs, max_len=256)
    ids, answer, lengths = dataset.collate([dataset[0]])
    with torch.no_grad():
        got = sequence_logprobs(model, ids, answer)
        for row in range(2):
            n = int(lengths[row])
            logp = model(ids[row : row + 1, : n - 1])[0].log_softmax(-1)[0]
            want = sum(logp[t - 1, ids[row, t]] for t in range(1, n) if answer[row, t])
            assert got[row].item() == pytest.approx(want.item(), abs=1e-4)
    # DPO with the policy equal to its reference: loss log 2 exactly
    add_reference_logprobs(model, dataset)
    loss, metrics = make_dpo_loss(0.1)(model, dataset.collate([dataset[0]]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and metrics[
        "margin"
    ].item() == pytest.approx(0)


def test_reward_model_reads_the_last_real_token_and_starts_neutral(tokenizer):
    model = RewardModel(tiny_model(len(tokenizer)))
    pairs = [
        PreferencePair(
            "Who's there?", "Bernardo", "Horatio and Marcellus, the guards", "t", "k"
        )
    ]
    dataset = PairDataset(tokenizer, pairs, max_len=256)
    batch = dataset.collate([dataset[0]])
    loss, metrics = reward_loss(model, batch)
    # zero-initialised head: every reward is 0
    assert loss.item() == pytest.approx(math.log(2))
    torch.nn.init.normal_(model.score.weight)
    ids, _, lengths = batch
    padded = model(ids, lengths)
    alone = torch.stack(
        [
            model(ids[i : i + 1, : int(lengths[i])], lengths[i : i + 1])[0]
            for i in range(2)
        ]
    )
    # right padding does not change the reward
    assert torch.allclose(padded, alone, atol=1e-5)


def test_on_policy_pairs_pair_right_with_wrong_answers(tokenizer):
    docs = [Document("hamlet", "Hamlet", PLAY, "test")]
    splits = build_tasks(docs, train_per_task=2, test_per_task=1, held_out=0.3)
    model = tiny_model(len(tokenizer))
    pairs = on_policy_pairs(model, tokenizer, splits.train, samples=3, max_new_tokens=5)
    assert pairs and all(p.kind == "on-policy" for p in pairs)
    by_prompt = {e.prompt: e for e in splits.train}
    # an untrained model is always wrong: the reference answer is chosen
    for p in pairs:
        assert is_correct(by_prompt[p.prompt], p.chosen) and not is_correct(
            by_prompt[p.prompt], p.rejected
        )


def test_sft_runs_through_the_pretraining_trainer_and_learns_the_answers(tokenizer):
    from foundry_core import TrainConfig
    from foundry_core.train import Trainer

    chats = [
        [
            {"role": "user", "content": "Who's there?"},
            {"role": "assistant", "content": "Bernardo"},
        ],
        [
            {"role": "user", "content": "Long live?"},
            {"role": "assistant", "content": "the king"},
        ],
    ] * 8
    dataset = ChatDataset(tokenizer, chats, max_len=256)
    config = TrainConfig(
        batch_size=4,
        seq_len=64,
        max_steps=40,
        warmup_steps=2,
        lr=1e-2,
        eval_interval=40,
        eval_steps=2,
    )
    history = Trainer(tiny_model(len(tokenizer)), config, dataset, dataset).fit()
    assert history[-1]["val_loss"] < 0.2 * history[0]["loss"]
