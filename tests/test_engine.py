"""The inference engine: continuous batching and speculative decoding give what plain
decoding gives, requests join and leave a running batch, and bad requests are refused
clearly."""

from dataclasses import replace

import pytest
import torch

from foundry_core.config import ModelConfig
from foundry_core.engine import Engine
from foundry_core.generate import generate
from foundry_core.kv_cache import KVCache
from foundry_core.model import Transformer
from foundry_core.speculative import speculative_generate

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = ModelConfig(
    vocab_size=97, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96,
    max_seq_len=64,
)  # fmt: skip


def model(config: ModelConfig = CONFIG, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    net = Transformer(config).eval()
    # larger weights than the init: sharper, more varied next-token choices
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(8)
    return net


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 20, (n,), generator=g).tolist()
    return [torch.randint(0, 97, (m,), generator=g).tolist() for m in lengths]


def test_engine_equals_greedy_decoding_of_each_request_alone():
    net = model()
    requests = list(zip(prompts(7), [5, 30, 1, 12, 40, 3, 20]))
    engine = Engine(net, slots=3)
    submitted = [engine.submit(p, n) for p, n in requests]
    finished = engine.run()
    assert sorted(map(id, finished)) == sorted(map(id, submitted))
    for request, (prompt, n) in zip(submitted, requests):
        assert request.output == generate(net, prompt, n, temperature=0)[0]
        assert request.submitted <= request.first_token <= request.finished
    # 7 requests through 3 slots: some joined while others were running
    assert engine.decode_steps < sum(n for _, n in requests)


def test_requests_join_a_running_batch_and_leave_it_when_done():
    net = model()
    engine = Engine(net, slots=2)
    short = engine.submit([1, 2, 3], 2)
    long = engine.submit([4, 5], 10)
    late = engine.submit([6], 4)
    assert engine.step() == [short]  # prefill + one decode step: 2 tokens
    assert [r is long for r in engine.running] == [True]
    engine.step()  # the late request takes the free slot
    assert late in engine.running and long in engine.running
    engine.run()
    assert late.finished < long.finished
    for request in (short, long, late):
        expected = generate(net, request.prompt, request.max_new_tokens, temperature=0)
        assert request.output == expected[0]


def test_engine_stops_at_a_stop_token_and_samples_reproducibly():
    net = model()
    prompt = prompts(1)[0]
    plain = generate(net, prompt, 30, temperature=0)[0]
    stop = plain[6]
    engine = Engine(net, slots=2)
    request = engine.submit(prompt, 30, stop_tokens=(stop,))
    engine.run()
    assert request.output == plain[: plain.index(stop)]
    assert request.tokens[-1] == stop

    def sampled(seed: int) -> list[list[int]]:
        engine = Engine(net, slots=2, seed=seed)
        reqs = [engine.submit(p, 15, temperature=1.0) for p in prompts(4)]
        engine.run()
        return [r.tokens for r in reqs]

    assert sampled(0) == sampled(0)
    assert sampled(0) != sampled(1)


@pytest.mark.parametrize("lookahead", [1, 3, 5])
def test_speculative_decoding_equals_greedy_decoding_of_the_target(lookahead):
    target = model()
    draft = model(replace(CONFIG, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1))
    for prompt in prompts(4):
        plain = generate(target, prompt, 40, temperature=0)[0]
        out, stats = speculative_generate(target, draft, prompt, 40, lookahead)
        assert out == plain
        assert stats.tokens == 40
        assert stats.accepted <= stats.drafted
        # every pass of the target yields the accepted guesses plus one token (the
        # last pass may overshoot max_new_tokens by one, which is cut)
        assert stats.tokens in (
            stats.accepted + stats.target_calls,
            stats.accepted + stats.target_calls - 1,
        )


def test_a_draft_that_is_the_target_is_always_right():
    target = model()
    out, stats = speculative_generate(target, target, [3, 1, 4], 33, lookahead=4)
    assert out == generate(target, [3, 1, 4], 33, temperature=0)[0]
    assert stats.acceptance == 1.0
    assert stats.target_calls == 1 + 32 // 5 + 1  # 1 + 6 rounds of 5 + one of 2
    assert stats.tokens_per_call > 4


def test_speculative_decoding_stops_at_a_stop_token():
    target = model()
    draft = model(seed=3)
    plain = generate(target, [5, 6], 30, temperature=0)[0]
    stop = plain[9]
    out, _ = speculative_generate(target, draft, [5, 6], 30, 4, stop_tokens=(stop,))
    assert out == plain[: plain.index(stop)]


def test_bad_requests_are_refused_with_clear_errors():
    net = model()
    engine = Engine(net, slots=1)
    with pytest.raises(ValueError, match="non-empty prompt"):
        engine.submit([], 4)
    with pytest.raises(ValueError, match="vocabularies differ"):
        engine.submit([200], 4)
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        engine.submit([1] * 60, 5)
    with pytest.raises(ValueError, match="temperature"):
        engine.submit([1], 4, temperature=-1)
    with pytest.raises(ValueError, match="at least one slot"):
        Engine(net, slots=0)
    other = model(replace(CONFIG, vocab_size=50))
    with pytest.raises(ValueError, match="both must use one tokenizer"):
        speculative_generate(net, other, [1, 2], 5)
    with pytest.raises(ValueError, match="lookahead"):
        speculative_generate(net, net, [1, 2], 5, lookahead=0)


def test_the_fixed_shape_step_of_cuda_graphs_computes_the_eager_step():
    """A CUDA graph replays one shape: every position of the context, the future
    masked. That step must give the logits of the step that reads only the positions
    written so far (checked here on the CPU; the graph itself in the next test)."""
    net = model()
    engine = Engine(net, slots=3)
    for prompt, n in zip(prompts(3), [9, 20, 14]):
        engine.submit(prompt, n)
    for _ in range(5):
        engine.step()
    n = len(engine.running)
    span = int(engine.lengths[:n].max()) + 1
    with torch.no_grad():
        narrow = engine._forward(n, span)
        whole = engine._forward(n, CONFIG.max_seq_len)
    assert n == 3 and span < CONFIG.max_seq_len
    torch.testing.assert_close(whole, narrow)


@CUDA
def test_cuda_graphs_serve_every_request_as_greedy_decoding_does():
    net = model().cuda()
    requests = list(zip(prompts(7), [5, 30, 1, 12, 40, 3, 20]))
    expected = [generate(net, p, n, temperature=0)[0] for p, n in requests]
    engine = Engine(net, slots=4, cuda_graphs=True)
    for _ in range(2):  # the second run replays the graphs the first recorded
        submitted = [engine.submit(p, n) for p, n in requests]
        engine.run()
        assert [r.output for r in submitted] == expected
    assert set(engine.graphs) <= {1, 2, 4} and 4 in engine.graphs


def test_cuda_graphs_need_a_cuda_model():
    with pytest.raises(ValueError, match="needs the model on a CUDA device; it is on"):
        Engine(model(), cuda_graphs=True)
    with pytest.raises(ValueError, match="not both"):
        Engine(model(), cuda_graphs=True, compile=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_the_compiled_step_serves_every_request_as_greedy_decoding_does(device):
    """compile=True: the fixed-shape step compiled by Inductor; two slots, so both
    shapes (one busy slot and two) are compiled and used."""
    net = model().to(device)
    requests = list(zip(prompts(3), [6, 14, 9]))
    expected = [generate(net, p, n, temperature=0)[0] for p, n in requests]
    engine = Engine(net, slots=2, compile=True)
    submitted = [engine.submit(p, n) for p, n in requests]
    engine.run()
    assert [r.output for r in submitted] == expected


def test_kv_cache_rewind_forgets_positions():
    cache = KVCache(CONFIG, 1, 10)
    cache.length = 6
    cache.rewind(2)
    assert cache.length == 4
    with pytest.raises(ValueError, match="cannot rewind 5"):
        cache.rewind(5)


@pytest.mark.parametrize("name", ["ci", "cpu", "rtx3060", "a100"])
def test_draft_config_is_a_much_smaller_model_with_the_same_vocabulary(name):
    from foundry_core import PRESETS
    from foundry_core.speculative import draft_config

    config = PRESETS[name].model
    draft = draft_config(config)
    assert draft.vocab_size == config.vocab_size
    assert draft.max_seq_len == config.max_seq_len
    assert draft.num_params() < config.num_params() / 3
    Transformer(draft)  # a valid model: heads divide the width, RoPE pairs fit
