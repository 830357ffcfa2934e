"""How much memory training needs, counted from the shapes alone (no model is built).

Weights, gradients and AdamW's two moments follow from the parameter count; autocast
keeps low-precision copies of the weights; activations are what each block keeps for
its backward pass, per token; the runtime (CUDA context, MPS) adds a fixed overhead.
memory.measure holds these numbers to account with real training steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..config import ModelConfig, TrainConfig
from ..hardware import (
    DEVICES,
    GIB,
    RUNTIME_OVERHEAD_BYTES,
    HardwareInfo,
    choose_precision,
)
from ..losses import chunk_elements


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory by component, in bytes."""

    weights: int
    gradients: int
    optimizer: int
    autocast_copies: int
    activations: int
    runtime: int

    def parts(self) -> dict[str, int]:
        """Each component by name, in bytes (the fields, in order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def total(self) -> int:
        return sum(self.parts().values())

    def as_gib(self) -> dict[str, float]:
        return {
            **{k: v / GIB for k, v in self.parts().items()},
            "total": self.total / GIB,
        }


def layer_bytes_per_token(
    model: ModelConfig,
    act_bytes: int,
    attention_scores: bool = False,
    seq_len: int | None = None,
    fp32_attention: bool = False,
) -> int:
    """Bytes one Transformer block keeps for its backward pass per token
    (see activation_bytes_per_token)."""
    d, f = model.d_model, model.d_ff
    norm_outputs = 2 * d * 4 if act_bytes == 4 else 5 * d * act_bytes
    attention = (2 * d + 2 * model.kv_dim) * (4 if fp32_attention else act_bytes)
    if fp32_attention:  # the output projection reads a 16-bit copy of the output
        attention += d * act_bytes
    total = (
        2 * d * 4
        + norm_outputs
        + attention
        + 4 * f * act_bytes
        + (model.n_heads + 2) * 4
    )
    if model.dropout > 0:
        total += 2 * d
    if attention_scores:
        total += 2 * model.n_heads * (seq_len or model.max_seq_len) * act_bytes
    return total


def activation_bytes_per_token(
    model: ModelConfig,
    act_bytes: int,
    grad_checkpointing: bool = False,
    attention_scores: bool = False,
    seq_len: int | None = None,
    fp32_attention: bool = False,
) -> int:
    """Bytes kept for the backward pass per token of a micro-batch, counted tensor by
    tensor.

    Per layer (layer_bytes_per_token; d = d_model, f = d_ff, kv = key/value width,
    `act_bytes` 2 under autocast and 4 in fp32):
      - each RMSNorm's input, in fp32 (its backward pass recomputes the normalised
        tensor from it, layers.RMSNormFunction):                 2 d x 4 bytes
      - the RMSNorm outputs as the matmuls read them: in fp32 the two outputs
        themselves (2 d x 4); under autocast every matmul casts its input on its
        own, so q, k and v each keep a 16-bit copy of the first norm's output and
        gate and up of the second's:                             5 d x 2 bytes
      - attention's query and output (d each), key and value (kv each): 2 d + 2 kv;
        on a CPU under autocast attention runs in fp32 (model.fp32_attention), so
        these take 4 bytes each, and the output projection keeps a 16-bit copy of
        the output, d more
      - the SwiGLU gate, up, SiLU(gate) and their product:       4 f
      - statistics in fp32: attention's log-sum-exp per head, each norm's 1/rms:
                                                                 (n_heads + 2) x 4 bytes
      - with dropout, two one-byte masks; with the math attention path (MPS), the
        T x T scores and probabilities per head
    Rotary embedding keeps nothing per token: its gradient needs only the cos/sin
    tables. After the last layer: the final norm's input and the loss's gradient for the
    hidden states, 2 d x 4 bytes (fp32 even under autocast: the residual stream is
    fp32). The logits are never stored whole
    (losses.linear_cross_entropy); see loss_workspace_bytes.
    tests/test_memory.py checks the per-layer count against the tensors autograd really
    saves.

    With activation checkpointing only each layer's input (fp32) survives the forward
    pass, plus one layer while the backward pass recomputes it. This follows the method
    of Korthikanti et al. (2022), adapted to RoPE + GQA + SwiGLU.
    """
    d = model.d_model
    per_layer = layer_bytes_per_token(
        model, act_bytes, attention_scores, seq_len, fp32_attention
    )
    layers = (
        (model.n_layers * d * 4 + per_layer)
        if grad_checkpointing
        else model.n_layers * per_layer
    )
    return layers + 2 * d * 4


def loss_workspace_bytes(model: ModelConfig, tokens: int, device: str = "cpu") -> int:
    """Memory of the fused loss beyond the per-token part: the output weight's
    gradient, made in the forward pass, and one chunk's logits, log-probabilities and
    16-bit gradient at a time (chunks are larger on a GPU: losses.chunk_elements)."""
    chunk_rows = min(tokens, max(16, chunk_elements(device) // model.vocab_size))
    return model.vocab_size * model.d_model * 4 + chunk_rows * model.vocab_size * (
        4 + 4 + 2
    )


def estimate_memory(
    model: ModelConfig, train: TrainConfig, info: HardwareInfo | str
) -> MemoryEstimate:
    """Peak memory of one training step with AdamW, as the sum of its parts.

    fp32 master weights (4 bytes/param), fp32 gradients (4), AdamW's two moments (8),
    under autocast a 16-bit copy of every matmul weight (2), the micro-batch's
    activations, and the runtime's own overhead. A slight upper bound: the backward
    pass frees activations while it makes the gradients, so the two never peak
    together (memory.measure_training_memory measures the real peak).
    `info` is the machine, or just a device kind ("cuda", "mps", "cpu") for a
    hypothetical one.
    """
    device = info if isinstance(info, str) else info.device
    if device not in DEVICES:
        raise ValueError(f"unknown device '{device}': use one of {', '.join(DEVICES)}")
    if isinstance(info, str):
        # A hypothetical device: assume bf16 on CUDA (Ampere and newer), fp32 elsewhere.
        info = HardwareInfo(device, device, None, bf16=device == "cuda")
    precision = choose_precision(info, train.dtype)
    act_bytes = 2 if precision.autocast else 4
    n = model.num_params()
    matmul_weights = n - model.param_counts()["norms"]
    tokens = train.batch_size * train.seq_len
    attention = dict(
        attention_scores=device == "mps",
        seq_len=train.seq_len,
        fp32_attention=device == "cpu" and precision.autocast,
    )
    activations = tokens * activation_bytes_per_token(
        model, act_bytes, train.grad_checkpointing, **attention
    )
    workspace = loss_workspace_bytes(model, tokens, device)
    if train.grad_checkpointing:
        # The loss's workspace is alive at the end of the forward pass, the recomputed
        # layer only later, in the backward pass: they never coexist, so only the larger
        # one adds to the peak.
        one_layer = tokens * layer_bytes_per_token(model, act_bytes, **attention)
        activations += max(0, workspace - one_layer)
    else:
        activations += workspace
    return MemoryEstimate(
        weights=4 * n,
        gradients=4 * n,
        optimizer=8 * n,
        autocast_copies=2 * matmul_weights if precision.autocast else 0,
        activations=activations,
        runtime=RUNTIME_OVERHEAD_BYTES[device],
    )


ZERO_STAGES = {
    0: "DDP: everything replicated",
    1: "ZeRO-1: optimizer states sharded",
    2: "ZeRO-2: + gradients sharded",
    3: "ZeRO-3 / FSDP: + weights sharded",
}


def sharded_memory(
    estimate: MemoryEstimate, world_size: int, stage: int
) -> dict[str, int]:
    """Per-device bytes of `estimate` when `world_size` devices share one run with ZeRO
    stage `stage`.

    Each stage splits one more kind of state into world_size shards (Rajbhandari et
    al., 2020): stage 1 the AdamW moments, stage 2 also the gradients, stage 3 also the
    weights (and their 16-bit autocast copies, made per block from the gathered
    weights). Activations belong to each device's own micro-batch and are never
    divided. The brief all-gather buffer of one block under stage 3 is ignored.
    """
    if stage not in ZERO_STAGES:
        raise ValueError(
            f"ZeRO stage must be one of {sorted(ZERO_STAGES)}, got {stage!r}"
        )
    if (
        isinstance(world_size, bool)
        or not isinstance(world_size, int)
        or world_size < 1
    ):
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    sharded = {
        "optimizer": stage >= 1,
        "gradients": stage >= 2,
        "weights": stage >= 3,
        "autocast_copies": stage >= 3,
    }
    parts = {
        part: size // (world_size if sharded.get(part) else 1)
        for part, size in estimate.parts().items()
    }
    return {**parts, "total": sum(parts.values())}
