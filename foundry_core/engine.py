"""An inference engine: many requests served at once (continuous batching). The other
way to serve faster, one request decoded in fewer steps of the big model, is in
speculative.py.

`generate` decodes one batch from start to end: every sequence waits for the longest,
and a request that arrives meanwhile waits for the whole batch. A serving engine keeps
a fixed number of *slots* instead. Each step decodes one token for every busy slot; a
finished request leaves at once and a waiting one takes its place after a prefill of
its prompt. Each slot has its own rows of the KV cache and its own position, so requests
of any length share one batch. Busy slots are kept at the front (a leaving request's
slot is filled by the last busy one), so every step reads a contiguous block.

On a GPU a small model's decoding step is hundreds of tiny kernel launches that the GPU
waits on; `Engine(..., cuda_graphs=True)` records the step once as a CUDA graph of fixed
shape and replays it: one launch per token (`_replay`). On a CPU the same fixed-shape
step can be compiled instead (`compile=True`, `_compiled_step`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .generate import until_stop
from .kv_cache import KVCache
from .model import Transformer


@dataclass
class Request:
    """One prompt to continue, what the engine produced for it, and when."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    stop_tokens: tuple[int, ...] = ()
    tokens: list[int] = field(default_factory=list)  # generated so far
    submitted: float = 0.0  # time.perf_counter() at each event
    first_token: float | None = None
    finished: float | None = None

    @property
    def done(self) -> bool:
        return len(self.tokens) >= self.max_new_tokens or bool(
            self.tokens and self.tokens[-1] in self.stop_tokens
        )

    @property
    def output(self) -> list[int]:
        """The new tokens, cut before the first stop token (as `generate` returns)."""
        return until_stop(self.tokens, self.stop_tokens)


def check_request(
    model: Transformer, prompt: Sequence[int], max_new_tokens: int, temperature: float
) -> None:
    """Refuse a request the model cannot serve, saying why."""
    config = model.config
    if len(prompt) == 0:
        raise ValueError("a request needs a non-empty prompt of token ids")
    if not all(0 <= t < config.vocab_size for t in prompt):
        raise ValueError(
            f"prompt token ids must lie in [0, {config.vocab_size}): "
            "tokenizer and model vocabularies differ?"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if len(prompt) + max_new_tokens > config.max_seq_len:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) "
            f"exceed the model's context of {config.max_seq_len}"
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")


class Engine:
    """Continuous batching over `slots` slots of one model's KV cache."""

    def __init__(
        self,
        model: Transformer,
        slots: int = 8,
        seed: int = 0,
        cuda_graphs: bool = False,
        compile: bool = False,
    ):
        if slots < 1:
            raise ValueError(f"an engine needs at least one slot, got {slots}")
        self.model = model.eval()
        config, weights = model.config, next(model.parameters())
        if cuda_graphs and compile:
            raise ValueError("choose cuda_graphs=True or compile=True, not both")
        if cuda_graphs and weights.device.type != "cuda":
            raise ValueError(
                "cuda_graphs=True needs the model on a CUDA device; "
                f"it is on {weights.device.type}"
            )
        shape = (
            config.n_layers,
            slots,
            config.n_kv_heads,
            config.max_seq_len,
            config.head_dim,
        )
        self.keys = torch.zeros(shape, dtype=weights.dtype, device=weights.device)
        self.values = torch.zeros_like(self.keys)
        # positions filled in each slot: the position of the slot's next token
        self.lengths = torch.zeros(slots, dtype=torch.long, device=weights.device)
        # each slot's last token: the input of the next decoding step
        self.last = torch.zeros_like(self.lengths)
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.compiled = self._compiled_step() if compile else None
        self.running: list[Request] = []  # running[i] holds slot i
        self.waiting: deque[Request] = deque()
        self.generator = torch.Generator(weights.device).manual_seed(seed)
        self.decode_steps = 0

    @property
    def slots(self) -> int:
        return self.keys.shape[1]

    def submit(
        self,
        prompt: Sequence[int],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        stop_tokens: Sequence[int] = (),
    ) -> Request:
        """Queue a request; it joins the running batch when a slot is free."""
        check_request(self.model, prompt, max_new_tokens, temperature)
        request = Request(
            list(prompt),
            max_new_tokens,
            temperature,
            tuple(stop_tokens),
            submitted=time.perf_counter(),
        )
        self.waiting.append(request)
        return request

    def run(self) -> list[Request]:
        """Step until every request has finished; return them in finishing order."""
        finished = []
        while self.waiting or self.running:
            finished += self.step()
        return finished

    @torch.no_grad()
    def step(self) -> list[Request]:
        """Admit waiting requests into free slots, decode one token for every running
        request, and return those that finished."""
        while self.waiting and len(self.running) < self.slots:
            self._prefill(self.waiting.popleft())
        if any(not request.done for request in self.running):
            self._decode()
        finished = []
        for slot in reversed(range(len(self.running))):
            if self.running[slot].done:
                finished.append(self._leave(slot))
        return finished[::-1]

    def _prefill(self, request: Request) -> None:
        """Run the prompt through the model into a fresh slot; sample its first
        token."""
        slot, n = len(self.running), len(request.prompt)
        model = self.model
        cache = KVCache(model.config, 1, n, self.keys.device, self.keys.dtype)
        ids = torch.tensor([request.prompt], device=self.keys.device)
        logits = model(ids, cache=cache, last_only=True)[0][:, -1]
        self.keys[:, slot, :, :n] = cache.keys[:, 0]
        self.values[:, slot, :, :n] = cache.values[:, 0]
        self.lengths[slot] = n
        self.running.append(request)
        self._append(logits, [request])

    def _decode(self) -> None:
        """One token for every running request."""
        n = len(self.running)
        self.last[:n] = torch.tensor([r.tokens[-1] for r in self.running])
        if self.cuda_graphs:
            logits = self._replay(n)[:n]
        elif self.compiled is not None:
            span = self.model.config.max_seq_len
            logits = self.compiled(self._padded(n), span)[:n]
        else:
            logits = self._forward(n, span=int(self.lengths[:n].max()) + 1)
        self.lengths[:n] += 1
        self.decode_steps += 1
        self._append(logits, self.running)

    def _forward(self, n: int, span: int) -> torch.Tensor:
        """Next-token logits (n, vocab) of the first n slots: each slot's last token
        goes in at that slot's own position and attends to that slot's own keys, among
        the first `span` positions."""
        model, last, position = self.model, self.last[:n], self.lengths[:n]
        cos = model.rope_cos[position][:, None, None]  # (slots, 1, 1, head_dim)
        sin = model.rope_sin[position][:, None, None]
        keys_seen = torch.arange(span, device=last.device)
        visible = (keys_seen[None, :] <= position[:, None])[:, None, None]
        rows = torch.arange(n, device=last.device)
        x = model.embed_tokens(last[:, None])
        # model.Block.forward, with a per-slot position and mask
        for i, block in enumerate(model.layers):
            attn = block.self_attn
            q, k, v = attn.project(block.input_layernorm(x), cos, sin)
            self.keys[i, rows, :, position] = k[:, :, 0]
            self.values[i, rows, :, position] = v[:, :, 0]
            out = F.scaled_dot_product_attention(
                q,
                self.keys[i, :n, :, :span],
                self.values[i, :n, :, :span],
                attn_mask=visible,
                enable_gqa=attn.n_kv_heads != attn.n_heads,
            )
            x = x + attn.o_proj(out.transpose(1, 2).reshape(n, 1, -1))
            x = x + block.mlp(block.post_attention_layernorm(x))
        return model.lm_head(model.norm(x))[:, -1]

    def _replay(self, n: int) -> torch.Tensor:
        """`_forward` for n slots, as a CUDA graph over the next power of two of slots
        and the whole context, recorded the first time that size is needed.

        A graph replays fixed kernels on fixed memory: the step reads its inputs from
        self.last and self.lengths and writes its logits to the same tensor each time.
        Slots past n compute tokens nobody reads, in rows no request owns.
        """
        size = self._padded(n)
        if size not in self.graphs:
            span = self.model.config.max_seq_len
            # Run once outside the graph first, on a side stream as PyTorch requires:
            # that settles the kernels and workspaces the graph will record.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._forward(size, span)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._forward(size, span)
            self.graphs[size] = (graph, logits)
        graph, logits = self.graphs[size]
        graph.replay()
        return logits

    def _padded(self, n: int) -> int:
        """The slots a fixed-shape step runs for n busy slots: the next power of two,
        so that a handful of shapes serve every n."""
        return min(self.slots, 1 << (n - 1).bit_length())

    def _compiled_step(self):
        """`_forward` compiled by Inductor for fixed shapes (the whole context, a power
        of two of slots, like `_replay`), with the weights frozen into the compiled
        code as constants. Freezing lets Inductor fold and prepack the weights for the
        CPU's matrix kernels; the price is that the engine must not outlive a change of
        weights. The C++ wrapper calls the step's kernels from C++ instead of Python:
        at batch 1 each kernel takes microseconds, and the calls would cost as much.
        Each new number of slots compiles once (seconds; benchmarks/README.md).
        """
        options = {"freezing": True, "cpp_wrapper": True}
        return torch.compile(self._forward, dynamic=False, options=options)

    def _append(self, logits: torch.Tensor, requests: list[Request]) -> None:
        """Pick each request's next token (greedy or sampled at its own temperature);
        a request that is already done gets none."""
        temperature = torch.tensor(
            [r.temperature for r in requests], device=logits.device
        )
        token = logits.argmax(-1)
        if (temperature > 0).any():
            scaled = logits.float() / temperature.clamp(min=1e-6)[:, None]
            drawn = torch.multinomial(scaled.softmax(-1), 1, generator=self.generator)[
                :, 0
            ]
            token = torch.where(temperature > 0, drawn, token)
        now = time.perf_counter()
        for request, t in zip(requests, token.tolist()):
            if request.done:
                continue
            request.tokens.append(t)
            if request.first_token is None:
                request.first_token = now
            if request.done:
                request.finished = now

    def _leave(self, slot: int) -> Request:
        """Free a slot: the last running request moves into it, so busy slots stay
        at the front."""
        request, last = self.running[slot], len(self.running) - 1
        if slot != last:
            n = int(self.lengths[last])
            self.keys[:, slot, :, :n] = self.keys[:, last, :, :n]
            self.values[:, slot, :, :n] = self.values[:, last, :, :n]
            self.lengths[slot] = n
            self.running[slot] = self.running[last]
        self.lengths[last] = 0  # a free slot's position stays inside the context
        self.running.pop()
        return request
