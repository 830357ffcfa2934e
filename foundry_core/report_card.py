"""Every stage of the course in one run, with a report card: `python -m foundry_core pipeline`.

The chapters' hand-off functions (pipeline.ensure_*) already build each stage once and reuse it; this
module calls them in order, times each, collects the numbers a reader would look at, and writes them as
one markdown page. It is the terminal path for a GPU user who wants the whole course's result at once.
"""

from __future__ import annotations

import copy
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
from .export import save_gguf, save_hf
from .hardware import detect
from .presets import course_seed
from .presets import Preset
from .quantize import fitting_group_sizes, linear_size_bytes, quantize_model, save_quantized


@dataclass
class ReportCard:
    preset: Preset
    hardware: str
    stages: list[dict] = field(default_factory=list)  # {"stage", "seconds", "metrics": {...}}

    def markdown(self) -> str:
        lines = [f"# Report card: preset `{self.preset.name}`", "",
                 f"- hardware: {self.hardware}",
                 f"- model: {self.preset.model.num_params() / 1e6:.2f}M parameters, "
                 f"{self.preset.model.n_layers} layers, d_model {self.preset.model.d_model}, "
                 f"vocabulary {self.preset.model.vocab_size}",
                 f"- total time: {sum(s['seconds'] for s in self.stages):.0f} s", "",
                 "| stage | time (s) | metrics |", "|---|---|---|"]
        for s in self.stages:
            metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in s["metrics"].items())
            lines.append(f"| {s['stage']} | {s['seconds']:.1f} | {metrics} |")
        return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def run_all(preset: Preset, out: Path | None = None, log: Callable[[str], None] = print) -> ReportCard:
    """Run (or reuse) every stage for `preset`, write report.md (and report.json) into `out`."""
    out = out or pipeline.artifacts_root() / preset.name
    card = ReportCard(preset, _describe_hardware())
    settings = preset.align
    state: dict = {}

    def stage(name: str, work: Callable[[], dict]) -> None:
        started = time.perf_counter()
        metrics = work()
        seconds = time.perf_counter() - started
        card.stages.append({"stage": name, "seconds": seconds, "metrics": metrics})
        log(f"[{len(card.stages)}/{len(STAGE_NAMES)}] {name:<14} {seconds:7.1f} s  "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))

    def data() -> dict:
        train_docs, val_docs = state["documents"] = pipeline.ensure_corpus(preset)
        train_path, val_path = pipeline.ensure_tokens(preset)
        state["val_tokens"] = read_tokens(val_path)
        return {"train documents": len(train_docs), "validation documents": len(val_docs),
                "train tokens": len(read_tokens(train_path)), "validation tokens": len(state["val_tokens"])}

    def tokenizer() -> dict:
        state["tokenizer"] = tok = pipeline.ensure_tokenizer(preset)
        sample = "".join(d.text for d in state["documents"][1])[:200_000]
        return {"vocabulary": len(tok), "bytes per token (validation)": len(sample.encode()) / len(tok.encode(sample))}

    def ppl(model) -> float:
        return perplexity(model, state["val_tokens"], preset.train.seq_len, max_windows=64)

    def pretrained() -> dict:
        state["base"], history = pipeline.ensure_pretrained(preset)
        return {"steps": history[-1]["step"], "train loss": history[-1]["loss"],
                "validation loss": history[-1]["val_loss"], "perplexity": ppl(state["base"])}

    def accuracy(model, temperature: float = 0.0) -> dict[str, float]:
        tasks = pipeline.ensure_tasks(preset)
        graded = grade(model, state["tokenizer"], tasks.test, max_new_tokens=settings.max_new_tokens,
                       temperature=temperature, generator=torch.Generator().manual_seed(course_seed()))
        return accuracy_by_task(graded)

    def sft() -> dict:
        state["sft"], history = pipeline.ensure_sft(preset)
        return {"held-out accuracy (base)": accuracy(state["base"])["all"],
                "held-out accuracy (SFT)": accuracy(state["sft"])["all"], "held-out loss": history[-1]["val_loss"]}

    def reward() -> dict:
        _, history = pipeline.ensure_reward(preset)
        return {"held-out pairwise accuracy": history[-1]["val_accuracy"], "held-out margin": history[-1]["val_margin"]}

    def dpo() -> dict:
        state["dpo"], history = pipeline.ensure_dpo(preset)
        return {"held-out DPO accuracy": history[-1]["val_accuracy"],
                "sampled accuracy (SFT)": accuracy(state["sft"], 1.0)["all"],
                "sampled accuracy (DPO)": accuracy(state["dpo"], 1.0)["all"]}

    def evaluation() -> dict:
        tasks = pipeline.ensure_tasks(preset)
        leak = contamination([e.line.text for e in tasks.test], [e.line.text for e in tasks.train])
        return {**{f"perplexity ({name})": ppl(state[name]) for name in ("base", "sft", "dpo")},
                "held-out lines": len(tasks.test), "of them mostly inside SFT training lines": len(leak.flagged)}

    def quantization() -> dict:
        model = state["dpo"]
        fitting = fitting_group_sizes(model, (8, 16, 32, 64, 128))
        if not fitting:
            raise ValueError("no int4 group size from 8 to 128 divides every layer width of this model")
        group = max(fitting)  # the fewest scales: int4 at its smallest
        metrics = {"fp32 MB": linear_size_bytes(model) / 1e6, "fp32 perplexity": ppl(model)}
        for scheme in ("int8", "int4"):
            quantized = quantize_model(copy.deepcopy(model), scheme, group)
            label = scheme if scheme == "int8" else f"int4 g{group}"
            metrics[f"{label} MB"] = linear_size_bytes(quantized) / 1e6
            metrics[f"{label} perplexity"] = ppl(quantized)
            save_quantized(quantized, out / "export" / f"dpo-{scheme}")
        return metrics

    def export() -> dict:
        hf = save_hf(state["dpo"], out / "export" / "hf")
        state["tokenizer"].save(hf / "tokenizer.model")
        gguf = save_gguf(state["dpo"], state["tokenizer"], out / "export" / "model.gguf")
        return {"hugging face folder": str(hf), "gguf file": str(gguf), "gguf MB": gguf.stat().st_size / 1e6}

    steps = dict(zip(STAGE_NAMES, (data, tokenizer, pretrained, sft, reward, dpo, evaluation, quantization, export)))
    for name, work in steps.items():
        stage(name, work)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(card.markdown())
    (out / "report.json").write_text(json.dumps({"preset": preset.name, "hardware": card.hardware,
                                                 "stages": card.stages}, indent=1, default=str))
    return card


STAGE_NAMES = ("data", "tokenizer", "pretraining", "sft", "reward model", "dpo", "evaluation", "quantization",
               "export")


def _describe_hardware() -> str:
    info = detect()
    memory = f", {info.memory_gib:.0f} GiB" if info.memory_gib else ""
    return f"{info.device}: {info.name}{memory}, bf16 {'yes' if info.bf16 else 'no'}, torch {torch.__version__}"
