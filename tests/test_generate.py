"""Decoding: the cache changes nothing, the samplers do what their names say.

Bad parameters are refused.
"""

import pytest
import torch

from foundry_core import ModelConfig
from foundry_core.generate import generate, next_token_probs, stream
from foundry_core.model import Transformer

# Untied: a random tied model mostly predicts its last input token again, which would
# make weak tests.
CONFIG = ModelConfig(
    vocab_size=97,
    d_model=48,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=128,
    max_seq_len=64,
    tie_embeddings=False,
)


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    model = Transformer(CONFIG).eval()
    # sharpen the random model so that greedy choices are not near-ties
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


PROMPT = [5, 17, 42, 8, 3, 77, 21, 60]


def test_greedy_with_cache_equals_greedy_without(model):
    cached = generate(model, PROMPT, 40, temperature=0)
    uncached = generate(model, PROMPT, 40, temperature=0, use_cache=False)
    assert cached == uncached and len(cached[0]) == 40
    assert len(set(cached[0])) > 10  # a real sequence, not one token repeated


def test_greedy_is_the_argmax_of_a_full_forward_pass(model):
    ids = list(PROMPT)
    for token in generate(model, PROMPT, 10, temperature=0)[0]:
        with torch.no_grad():
            assert token == model(torch.tensor([ids]))[0][0, -1].argmax().item()
        ids.append(token)


def test_top_k_one_equals_greedy(model):
    sampled = generate(
        model,
        PROMPT,
        20,
        temperature=1.3,
        top_k=1,
        generator=torch.Generator().manual_seed(1),
    )
    assert sampled == generate(model, PROMPT, 20, temperature=0)


def test_sampling_is_reproducible_with_a_generator(model):
    def run(seed):
        return generate(
            model,
            PROMPT,
            20,
            temperature=1.0,
            generator=torch.Generator().manual_seed(seed),
        )

    assert run(3) == run(3) and run(3) != run(4)


def test_stop_tokens_stop(model):
    greedy = generate(model, PROMPT, 30, temperature=0)[0]
    stop = greedy[5]
    first = greedy.index(stop)
    assert generate(model, PROMPT, 30, temperature=0, stop_tokens=[stop]) == [
        greedy[:first]
    ]
    steps = list(stream(model, PROMPT, 30, temperature=0, stop_tokens=[stop]))
    assert len(steps) == first + 1 and steps[-1].item() == stop


def test_batches_of_equal_length_prompts(model):
    batch = [PROMPT, PROMPT[::-1]]
    together = generate(model, batch, 12, temperature=0)
    assert together == [generate(model, p, 12, temperature=0)[0] for p in batch]


@pytest.mark.parametrize("use_cache", [True, False])
def test_batches_of_prompts_of_different_lengths(model, use_cache):
    """Left padding is invisible: each row generates exactly what it generates alone."""
    batch = [PROMPT, PROMPT[:3], PROMPT[2:7], [11]]
    together = generate(model, batch, 15, temperature=0, use_cache=use_cache)
    assert together == [generate(model, p, 15, temperature=0)[0] for p in batch]


def test_padded_forward_matches_unpadded_logits(model):
    short, pad = torch.tensor([PROMPT[:5]]), 3
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), short], dim=1)
    real = torch.cat(
        [torch.zeros(1, pad, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool)],
        dim=1,
    )
    with torch.no_grad():
        alone = model(short)[0]
        masked = model(padded, attention_mask=real)[0][:, pad:]
        unmasked = model(padded)[0][:, pad:]
    assert torch.allclose(masked, alone, atol=1e-5)
    # without the mask the padding leaks in
    assert not torch.allclose(unmasked, alone, atol=1e-3)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(padded, attention_mask=real[:, 1:])


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(
        next_token_probs(logits, top_p=0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]])
    )
    assert torch.allclose(
        next_token_probs(logits, top_p=0.4), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    )
    assert torch.allclose(
        next_token_probs(logits, top_p=1.0), torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    )


def test_temperature_and_repetition_penalty():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    hot, cold = (
        next_token_probs(logits, temperature=2.0),
        next_token_probs(logits, temperature=0.5),
    )
    assert hot[0, 0] < torch.softmax(logits, -1)[0, 0] < cold[0, 0]
    penalised = next_token_probs(
        logits, repetition_penalty=2.0, previous=torch.tensor([[0]])
    )
    assert torch.allclose(penalised, torch.softmax(torch.tensor([[1.0, 1.0, 0.0]]), -1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(top_p=0.0), r"top_p must lie in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must lie in \(0, 1\]"),
        (dict(top_k=0), "top_k must be a positive integer"),
        (dict(repetition_penalty=0), "repetition_penalty must be > 0"),
    ],
)
def test_invalid_sampling_parameters(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, PROMPT, 5, **kwargs)


def test_context_overflow_and_empty_prompt(model):
    with pytest.raises(
        ValueError,
        match=r"prompt \(8 tokens\) \+ max_new_tokens \(60\) "
        r"exceed the model's context of 64",
    ):
        generate(model, PROMPT, 60)
    with pytest.raises(ValueError, match="non-empty list of token ids"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match="non-empty list of token ids"):
        generate(model, [PROMPT, []], 5)


def test_decode_ms_per_token_is_positive_and_checks_its_arguments():
    from foundry_core.generate import decode_ms_per_token

    model = Transformer(
        ModelConfig(
            vocab_size=32,
            d_model=16,
            n_layers=1,
            n_heads=2,
            n_kv_heads=1,
            d_ff=32,
            max_seq_len=16,
        )
    ).eval()
    assert decode_ms_per_token(model, [1, 2, 3], new_tokens=4, repeats=1) > 0
    with pytest.raises(ValueError, match="at least 1"):
        decode_ms_per_token(model, [1], new_tokens=0)
