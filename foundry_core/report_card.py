"""Every stage of the course in one run, with a report card: `python -m foundry_core
pipeline`.

The chapters' hand-off functions (pipeline.ensure_*) already build each stage once and
reuse it; this module calls them in order, times each, collects the numbers a reader
would look at, and writes them as one markdown page. It is the terminal path for a GPU
user who wants the whole course's result at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import pipeline
from .align import accuracy_by_task, grade
from .data import read_tokens
from .evaluate import contamination, perplexity
from .hardware import detect
from .presets import Preset, course_seed
from .quantize import (
    linear_size_bytes,
)


@dataclass
class ReportCard:
    preset: Preset
    hardware: str
    # {"stage", "seconds", "metrics": {...}}
    stages: list[dict] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"# Report card: preset `{self.preset.name}`",
            "",
            f"- hardware: {self.hardware}",
            f"- model: {self.preset.model.num_params() / 1e6:.2f}M parameters, "
            f"{self.preset.model.n_layers} layers, "
            f"d_model {self.preset.model.d_model}, "
            f"vocabulary {self.preset.model.vocab_size}",
            f"- total time: {sum(s['seconds'] for s in self.stages):.0f} s",
            "",
            "| stage | time (s) | metrics |",
            "|---|---|---|",
        ]
        for s in self.stages:
            metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in s["metrics"].items())
            lines.append(f"| {s['stage']} | {s['seconds']:.1f} | {metrics} |")
        return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return (
        f"{value:.4g}"
        if isinstance(value, float)
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


# The report card's steps: the pipeline's stages (tasks aside, which the later ones
# use), then what the last chapters do with the aligned model.
STEPS = (
    "corpus",
    "tokenizer",
    "tokens",
    "pretrained",
    "sft",
    "reward",
    "dpo",
    "grpo",
    "ppo",
    "evaluation",
    "quantized",
    "export",
)


class _Steps:
    """One method per step, each returning the numbers a reader would look at; a later
    step reuses what an earlier one loaded (the models, the validation tokens)."""

    def __init__(self, preset: Preset):
        self.preset = preset
        self.documents = pipeline.ensure_corpus(preset)
        self.text_tokenizer = pipeline.ensure_tokenizer(preset)
        self.val_tokens = read_tokens(pipeline.ensure_tokens(preset)[1])
        self.models: dict = {}

    def corpus(self) -> dict:
        train, val = self.documents
        return {"train documents": len(train), "validation documents": len(val)}

    def tokenizer(self) -> dict:
        sample = "".join(d.text for d in self.documents[1])[:200_000]
        return {
            "vocabulary": len(self.text_tokenizer),
            "bytes per token (validation)": len(sample.encode())
            / len(self.text_tokenizer.encode(sample)),
        }

    def tokens(self) -> dict:
        return {
            "train tokens": len(read_tokens(pipeline.ensure_tokens(self.preset)[0])),
            "validation tokens": len(self.val_tokens),
        }

    def pretrained(self) -> dict:
        self.models["base"], history = pipeline.ensure_pretrained(self.preset)
        return {
            "steps": history[-1]["step"],
            "train loss": history[-1]["loss"],
            "validation loss": history[-1]["val_loss"],
            "perplexity": self._perplexity(self.models["base"]),
        }

    def sft(self) -> dict:
        self.models["sft"], history = pipeline.ensure_sft(self.preset)
        return {
            "held-out accuracy (base)": self._accuracy(self.models["base"])["all"],
            "held-out accuracy (SFT)": self._accuracy(self.models["sft"])["all"],
            "held-out loss": history[-1]["val_loss"],
        }

    def reward(self) -> dict:
        _, history = pipeline.ensure_reward(self.preset)
        return {
            "held-out pairwise accuracy": history[-1]["val_accuracy"],
            "held-out margin": history[-1]["val_margin"],
        }

    def dpo(self) -> dict:
        self.models["dpo"], history = pipeline.ensure_dpo(self.preset)
        return {
            "held-out DPO accuracy": history[-1]["val_accuracy"],
            "sampled accuracy (SFT)": self._accuracy(self.models["sft"], 1.0)["all"],
            "sampled accuracy (DPO)": self._accuracy(self.models["dpo"], 1.0)["all"],
        }

    def grpo(self) -> dict:
        self.models["grpo"], history = pipeline.ensure_grpo(self.preset)
        return self._rl_metrics(self.models["grpo"], history)

    def ppo(self) -> dict:
        self.models["ppo"], history = pipeline.ensure_ppo(self.preset)
        return {
            **self._rl_metrics(self.models["ppo"], history),
            "held-out reward-model score": history[-1]["val_reward"],
        }

    def _rl_metrics(self, model, history: list[dict]) -> dict:
        return {
            "KL to SFT (last step)": history[-1]["kl"],
            "held-out accuracy": self._accuracy(model)["all"],
            "sampled accuracy": self._accuracy(model, 1.0)["all"],
        }

    def evaluation(self) -> dict:
        tasks = pipeline.ensure_tasks(self.preset)
        leak = contamination(
            [e.line.text for e in tasks.test], [e.line.text for e in tasks.train]
        )
        return {
            **{
                f"perplexity ({name})": self._perplexity(model)
                for name, model in self.models.items()
            },
            "held-out lines": len(tasks.test),
            "of them mostly inside SFT training lines": len(leak.flagged),
        }

    def quantized(self) -> dict:
        model = self.models["dpo"]
        quantized = pipeline.ensure_quantized(self.preset)
        int4 = f"int4 g{quantized.group_size}"
        return {
            "fp32 MB": linear_size_bytes(model) / 1e6,
            "fp32 perplexity": self._perplexity(model),
            "int8 MB": linear_size_bytes(quantized.int8) / 1e6,
            "int8 perplexity": self._perplexity(quantized.int8),
            f"{int4} MB": linear_size_bytes(quantized.int4) / 1e6,
            f"{int4} perplexity": self._perplexity(quantized.int4),
            "folder": str(pipeline.stage_dir("quantized", self.preset)),
        }

    def export(self) -> dict:
        files = pipeline.ensure_export(self.preset)
        return {
            "hugging face folder": str(files.hf),
            "gguf file": str(files.gguf),
            "gguf MB": files.gguf.stat().st_size / 1e6,
        }

    def _perplexity(self, model) -> float:
        return perplexity(
            model,
            self.val_tokens,
            self.preset.train.seq_len,
            max_windows=self.preset.evaluation.max_windows,
        )

    def _accuracy(self, model, temperature: float = 0.0) -> dict[str, float]:
        graded = grade(
            model,
            self.text_tokenizer,
            pipeline.ensure_tasks(self.preset).test,
            max_new_tokens=self.preset.align.max_new_tokens,
            temperature=temperature,
            generator=torch.Generator().manual_seed(course_seed()),
        )
        return accuracy_by_task(graded)


def run_all(
    preset: Preset, out: Path | None = None, log: Callable[[str], None] = print
) -> ReportCard:
    """Run (or reuse) every stage for `preset`, write report.md (and report.json)
    into `out`."""
    out = out or pipeline.artifacts_root() / preset.name
    card = ReportCard(preset, _describe_hardware())
    started = time.perf_counter()
    # builds the data stages, which the first three steps report
    steps = _Steps(preset)
    for number, name in enumerate(STEPS, 1):
        metrics = getattr(steps, name)()
        seconds, started = time.perf_counter() - started, time.perf_counter()
        card.stages.append({"stage": name, "seconds": seconds, "metrics": metrics})
        log(
            f"[{number}/{len(STEPS)}] {name:<11} {seconds:7.1f} s  "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(card.markdown())
    (out / "report.json").write_text(
        json.dumps(
            {"preset": preset.name, "hardware": card.hardware, "stages": card.stages},
            indent=1,
            default=str,
        )
    )
    return card


def _describe_hardware() -> str:
    info = detect()
    memory = f", {info.memory_gib:.0f} GiB" if info.memory_gib else ""
    return (
        f"{info.device}: {info.name}{memory}, "
        f"bf16 {'yes' if info.bf16 else 'no'}, torch {torch.__version__}"
    )
