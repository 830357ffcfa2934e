"""The Hugging Face folder as a new user meets it: AutoTokenizer, AutoModelForCausalLM,
apply_chat_template and generate, against our tokenizer and our generate."""

import json
import math

import numpy as np
import pytest
import torch
from chat_fixtures import CHATS, PROBES, TEXT

from foundry_core import ModelConfig
from foundry_core.align import ALPACA, CHATML, encode_prompt, render
from foundry_core.evaluate import perplexity
from foundry_core.export import save_hf
from foundry_core.generate import generate
from foundry_core.hf_files import (
    bpe_merges,
    chat_template_jinja,
    fast_tokenizer,
    learned_pieces,
)
from foundry_core.model import Transformer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, chat_model, chat_tokenizer):
    return save_hf(
        chat_model, tmp_path_factory.mktemp("hf"), tokenizer=chat_tokenizer, context=48
    )


def test_merges_build_only_learned_pieces(chat_tokenizer):
    pieces = learned_pieces(chat_tokenizer)
    merges = bpe_merges(chat_tokenizer)
    assert merges and all(a in pieces and b in pieces for a, b in merges)
    assert all(a + b in pieces for a, b in merges)
    assert "<|im_end|>" not in pieces and "<0x0A>" not in pieces


@pytest.mark.parametrize("text", PROBES + TEXT.splitlines())
def test_fast_tokenizer_gives_our_ids(chat_tokenizer, text):
    fast = fast_tokenizer(chat_tokenizer)
    ids = chat_tokenizer.encode(text)
    assert fast.encode(text).ids == ids
    assert fast.decode(ids, skip_special_tokens=False) == chat_tokenizer.decode(
        ids
    ) or (
        "<|im" in text  # we decode the chat markers as text too: the same string
    )


def test_a_literal_space_mark_is_where_the_two_differ(chat_tokenizer):
    """Pinned, not fixed: we spell a literal "▁" as its three UTF-8 bytes so that it
    comes back as itself; the fast tokenizer's normalizer has already turned spaces into
    "▁" and cannot tell the two apart, so it reads the mark as a space. Decoding our ids
    still gives the mark back."""
    fast = fast_tokenizer(chat_tokenizer)
    text = "a\u2581b"
    ours = chat_tokenizer.encode(text)
    assert fast.encode(text).ids == chat_tokenizer.encode("a b") != ours
    assert fast.decode(ours) == text == chat_tokenizer.decode(ours)


def test_auto_classes_load_the_folder_with_the_right_ids(folder, chat_tokenizer):
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    end_of_turn = chat_tokenizer.piece_to_id("<|im_end|>")
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        chat_tokenizer.bos_id,
        chat_tokenizer.eos_id,
        chat_tokenizer.pad_id,
    )
    assert config["max_position_embeddings"] == 48  # the trained context
    assert generation["eos_token_id"] == sorted([chat_tokenizer.eos_id, end_of_turn])
    assert hf_tokenizer.eos_token_id == chat_tokenizer.eos_id
    assert hf_tokenizer.pad_token_id == chat_tokenizer.pad_id
    for text in PROBES[:-1]:
        assert hf_tokenizer(text, add_special_tokens=True)["input_ids"] == (
            chat_tokenizer.encode(text)
        ), text


@pytest.mark.parametrize("template", [CHATML, ALPACA], ids=["chatml", "alpaca"])
def test_the_jinja_template_renders_our_chat(chat_tokenizer, template):
    jinja2 = pytest.importorskip("jinja2")
    chat = CHATS[2] + [{"role": "user", "content": "And the king?"}]
    text = jinja2.Template(chat_template_jinja(template, chat_tokenizer)).render(
        messages=chat, add_generation_prompt=True
    )
    end = chat_tokenizer.id_to_piece(template.end_of_turn(chat_tokenizer))
    assert text == render(chat, template, add_generation_prompt=True).replace(
        "<eot>", end
    )


def test_chat_through_transformers_gives_our_tokens_and_stops(
    folder, chat_tokenizer, chat_model
):
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    end_of_turn = chat_tokenizer.piece_to_id("<|im_end|>")
    for chat in CHATS:
        question = chat[:-1]
        prompt = hf_tokenizer.apply_chat_template(
            question, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        assert prompt[0].tolist() == encode_prompt(chat_tokenizer, question)
        with torch.no_grad():
            out = hf_model.generate(prompt, max_new_tokens=20, do_sample=False)
        theirs = out[0, prompt.shape[1] :].tolist()
        ours = generate(
            chat_model,
            prompt[0].tolist(),
            20,
            temperature=0.0,
            stop_tokens=[end_of_turn],
        )
        # theirs ends with the stop token, which ours cuts off
        assert theirs == ours[0] + [end_of_turn], (theirs, ours)
        assert (
            hf_tokenizer.decode(theirs, skip_special_tokens=True) == chat[-1]["content"]
        )


def test_text_generation_pipeline_answers_a_chat(folder):
    chat = CHATS[0][:-1]
    generator = transformers.pipeline("text-generation", model=str(folder))
    reply = generator(chat, max_new_tokens=20, do_sample=False)[0]["generated_text"]
    assert reply[-1] == {"role": "assistant", "content": CHATS[0][-1]["content"]}


def test_model_card_and_tokenizer_mismatch(tmp_path, chat_model, chat_tokenizer):
    folder = save_hf(
        chat_model, tmp_path / "a", tokenizer=chat_tokenizer, card="# hi\n"
    )
    assert (folder / "README.md").read_text() == "# hi\n"
    assert json.loads((folder / "config.json").read_text())[
        "max_position_embeddings"
    ] == (chat_model.config.max_seq_len)
    wrong = Transformer(ModelConfig(**{**vars(chat_model.config), "vocab_size": 500}))
    with pytest.raises(ValueError, match="tokenizer has 360 tokens"):
        save_hf(wrong, tmp_path / "b", tokenizer=chat_tokenizer)
    assert not (tmp_path / "b").exists()


def harness_rolling_perplexity(model, tokens: list[int], prefix: int, length: int):
    """Perplexity as lm-evaluation-harness's loglikelihood_rolling computes it for a
    Hugging Face model (written here from its documented definition): windows of
    `length` inputs, each scoring the next up to `length` tokens not yet scored, the
    first reading `prefix` before token 0 so that token 0 is scored too."""
    nll, scored = 0.0, 0
    while scored < len(tokens):
        count = min(length, len(tokens) - scored)
        end = scored + count
        inputs = ([prefix] + tokens)[max(0, end - length) : end]
        with torch.no_grad():
            logits = model(torch.tensor([inputs])).logits[0, -count:]
        targets = torch.tensor(tokens[scored:end])
        nll += torch.nn.functional.cross_entropy(
            logits, targets, reduction="sum"
        ).item()
        scored = end
    return math.exp(nll / len(tokens))


def test_our_perplexity_with_a_prefix_token_is_the_harness_s(
    folder, chat_model, chat_tokenizer
):
    """Two conventions differ: the harness prepends a token (here <s>) so that the
    first token is scored too, which shifts every window by one; we score from the
    second token on. Given the same prefix, ours is the harness's number."""
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = chat_tokenizer.encode(TEXT * 3)
    bos = chat_tokenizer.bos_id
    harness = harness_rolling_perplexity(hf_model, tokens, bos, 32)
    aligned = perplexity(chat_model, np.array([bos] + tokens), 32)
    plain = perplexity(chat_model, np.array(tokens), 32)
    assert abs(aligned / harness - 1) < 1e-3, (aligned, harness)
    assert abs(plain / harness - 1) > 1e-3, (plain, harness)  # what the note explains
