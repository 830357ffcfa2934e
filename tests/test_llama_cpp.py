"""The GGUF files in the real client, llama.cpp (through llama-cpp-python, the
`deploy` extra): the same tokens, logits within each format's error, chat that stops at
the end of the answer, and quantized tensors equal to llama.cpp's own quantizer's.

Skipped where llama-cpp-python is not installed (`pip install -e ".[deploy]"`)."""

import ctypes

import numpy as np
import pytest
import torch
from chat_fixtures import CHATS, PROBES

from foundry_core.align import encode_chat
from foundry_core.generate import generate
from foundry_core.gguf_export import open_in_llama_cpp, save_gguf

llama_cpp = pytest.importorskip(
    "llama_cpp", reason='llama-cpp-python is not installed (pip install -e ".[deploy]")'
)
gguf = pytest.importorskip("gguf")

# mean |logit difference| over three chats, as a share of the logits' spread. Measured
# (llama-cpp-python 0.3.36, AMD EPYC with AVX-512) on this chat model and on the ci
# preset's DPO model: F32 under 1e-6 of it (max 2e-5 absolute), Q8_0 0.007-0.008,
# Q4_0 0.03-0.05. Q8_0 and Q4_0 errors come from the weights' rounding and from
# llama.cpp rounding the activations to 8 bits in its dot products.
MEAN_ERROR = {"Q8_0": 0.04, "Q4_0": 0.2}


@pytest.fixture(scope="module")
def files(tmp_path_factory, chat_model, chat_tokenizer):
    folder = tmp_path_factory.mktemp("gguf")
    return {
        kind: save_gguf(
            chat_model,
            chat_tokenizer,
            folder / f"{kind}.gguf",
            quantization=None if kind == "F32" else kind,
        )
        for kind in ("F32", "Q8_0", "Q4_0")
    }


def test_llama_cpp_tokenizes_as_we_do(files, chat_tokenizer):
    llm = open_in_llama_cpp(files["F32"], 64)
    for text in PROBES[:-1]:
        theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert theirs == chat_tokenizer.encode(text), text
        assert llm.detokenize(theirs, special=True).decode() == text
    # as for transformers (test_export_hf.py): a literal "▁" reads as a space
    assert llm.tokenize("a\u2581b".encode(), add_bos=False) == chat_tokenizer.encode(
        "a b"
    )


@pytest.mark.parametrize("kind", ["F32", "Q8_0", "Q4_0"])
def test_logits_match_ours_within_the_format_s_error(
    files, chat_model, chat_tokenizer, kind
):
    llm = open_in_llama_cpp(files[kind], 64)
    theirs, ours = [], []
    for chat in CHATS:
        ids = encode_chat(chat_tokenizer, chat)[0]
        llm.reset()
        llm.eval(ids)
        theirs.append(np.array(llm.scores[: len(ids)]))
        with torch.no_grad():
            ours.append(chat_model(torch.tensor([ids]))[0][0].numpy())
    theirs, ours = np.concatenate(theirs), np.concatenate(ours)
    error = np.abs(theirs - ours)
    if kind == "F32":
        assert error.max() <= 1e-4, error.max()
    else:
        assert 0 < error.mean() <= MEAN_ERROR[kind] * ours.std(), error.mean()


def test_f32_greedy_tokens_and_chat_stop_at_the_answer(
    files, chat_model, chat_tokenizer
):
    llm = open_in_llama_cpp(files["F32"], 64)
    end_of_turn = chat_tokenizer.piece_to_id("<|im_end|>")
    for chat in CHATS:
        reply = llm.create_chat_completion(chat[:-1], temperature=0.0, max_tokens=20)
        choice = reply["choices"][0]
        assert choice["message"]["content"] == chat[-1]["content"]
        assert choice["finish_reason"] == "stop"  # at <|im_end|>, not max_tokens
        prompt = encode_chat(chat_tokenizer, chat[:-1], add_generation_prompt=True)[0]
        tokens = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            tokens.append(token)
            if token == end_of_turn or len(tokens) == 20:
                break
        ours = generate(
            chat_model, prompt, 20, temperature=0.0, stop_tokens=[end_of_turn]
        )[0]
        assert tokens == ours + [end_of_turn]


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0"])
def test_quantized_tensors_equal_llama_quantize_s(files, tmp_path, kind):
    """llama.cpp's own quantizer, run on our F32 file, writes the same blocks we do,
    and keeps the tied token matrix at Q8_0 under Q4_0 as we do (at a width that is not
    a multiple of 256, as here)."""
    low = llama_cpp.llama_cpp
    params = low.llama_model_quantize_default_params()
    params.ftype = getattr(low, f"LLAMA_FTYPE_MOSTLY_{kind}")
    theirs_path = tmp_path / f"llama-{kind}.gguf"
    status = low.llama_model_quantize(
        str(files["F32"]).encode(), str(theirs_path).encode(), ctypes.byref(params)
    )
    assert status == 0
    theirs = {t.name: t for t in gguf.GGUFReader(theirs_path).tensors}
    ours = {t.name: t for t in gguf.GGUFReader(files[kind]).tensors}
    assert theirs.keys() == ours.keys()
    for name, tensor in ours.items():
        assert tensor.tensor_type == theirs[name].tensor_type, name
        assert np.array_equal(np.asarray(tensor.data), np.asarray(theirs[name].data))
