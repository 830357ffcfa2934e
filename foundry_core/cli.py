"""The course in a terminal: the chapters' functions, for runs too long for a notebook.

python -m foundry_core run STAGE [--preset NAME] [--set KEY=VALUE ...]  # into the cache
python -m foundry_core prepare  [--preset NAME]       # corpus, tokenizer, token files
python -m foundry_core pretrain [--preset NAME] [--steps N] [--out DIR] [--resume]
python -m foundry_core generate --run DIR --prompt TEXT
                                [--max-new-tokens N] [--temperature T]
python -m foundry_core pipeline [--preset NAME]       # every stage, then report.md
python -m foundry_core run sft --preset ci --set sft.max_steps=50 --set align.beta=0.3
# two processes, data-parallel (DDP), then sharded (FSDP):
torchrun --nproc_per_node=2 -m foundry_core pretrain --preset cpu
torchrun --nproc_per_node=2 -m foundry_core pretrain --preset cpu --parallel fsdp
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import latest_checkpoint
from .data import read_tokens
from .generate import generate
from .hardware import detect
from .parallel import PARALLEL, local_parameter_bytes
from .pipeline import (
    ADAPTED,
    MAX_PASSES,
    STAGES,
    TRAINED,
    artifacts_root,
    data_budget,
    ensure,
    finish_pretraining,
    pretrain_trainer,
    pretrained_dir,
    publish_pretrained,
    stage_summary,
)
from .presets import PRESETS, SECTIONS, get_preset, select_preset, with_overrides
from .runs import describe_run, load_run
from .tokenizer import Tokenizer
from .train import Trainer


def _preset(name: str | None, announce: bool = True, settings: list[str] | None = None):
    """The named preset (else the one picked for this machine), with the --set
    changes applied."""
    if name:
        preset = get_preset(name)
    else:
        choice = select_preset(detect())
        if announce:
            print(f"preset {choice.preset.name}: {choice.reason}")
        preset = choice.preset
    return with_overrides(preset, *(settings or []))


def run_stage(args: argparse.Namespace) -> None:
    """Build one stage (and whatever it needs) into the cache the chapters read, then
    say what it holds."""
    stage = "pretrained" if args.stage == "pretrain" else args.stage
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "`run` builds a stage in one process; under torchrun, pretrain with "
            "`torchrun ... -m foundry_core pretrain` (its own run folder)"
        )
    preset = _preset(args.preset, settings=args.set)
    result = ensure(stage, preset, progress=stage in TRAINED + ADAPTED)
    print(json.dumps(stage_summary(stage, preset, result)))


def prepare(args: argparse.Namespace) -> None:
    preset = _preset(args.preset, settings=args.set)
    train, val = ensure("tokens", preset)
    print(
        f"tokenizer and tokens ready: {len(read_tokens(train)):,} train / "
        f"{len(read_tokens(val)):,} validation tokens in {train.parent}"
    )
    budget = data_budget(preset)
    print(budget)
    if budget.repeats_too_often:
        print(
            f"warning: more than {MAX_PASSES:.0f} passes over the corpus; "
            "expect the model to memorise it (its validation loss will rise)"
        )


def _distributed(parallel: str = "ddp") -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, initialising the process group;
    else (0, 1).

    FSDP needs a process group even for one process, and torchrun to make one."""
    if parallel == "fsdp" and "WORLD_SIZE" not in os.environ:
        raise ValueError(
            "--parallel fsdp shards the model across processes: launch it with "
            "`torchrun --nproc_per_node N -m foundry_core pretrain ... --parallel fsdp`"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and parallel == "ddp":
        return 0, 1
    # one GPU per process, chosen before NCCL starts, so none share GPU 0
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(
        "nccl" if torch.cuda.is_available() else "gloo"
    )
    return torch.distributed.get_rank(), world


def _rank_logger(rank: int, world: int, every: int) -> Callable[[Trainer, dict], None]:
    """A Trainer callback printing this process's view every `every` steps: its own loss
    next to the loss averaged over all ranks (what every rank reports, and what one
    process would see)."""

    def log(trainer: Trainer, record: dict) -> None:
        if record["step"] % every == 0 or record["step"] == trainer.config.max_steps:
            print(
                f"[rank {rank}/{world}] step {record['step']} | "
                f"loss {record['loss']:.4f} "
                f"(this rank {record.get('rank_loss', record['loss']):.4f}) | "
                f"{record['tokens'] // world:,} tokens on this rank | "
                f"{record['tokens_per_s']:,.0f} tok/s in all",
                flush=True,
            )

    return log


def pretrain(args: argparse.Namespace) -> None:
    rank, world = _distributed(args.parallel)
    preset = _preset(args.preset, announce=rank == 0, settings=args.set)
    if args.batch_size:
        preset = with_overrides(preset, batch_size=args.batch_size)
    tokenizer = _prepare_data(preset, rank, world)
    out = (
        Path(args.out)
        if args.out
        else artifacts_root() / preset.name / "runs" / pretrained_dir(preset).name
    )
    trainer = _pretrain_trainer(args, preset, out, rank, world)
    if args.resume and latest_checkpoint(out):
        step = trainer.resume()
        if rank == 0:
            print(f"resuming from step {step}")
    if rank == 0:
        describe_run(out, "pretrained", preset, tokenizer)
    trainer.fit(args.steps)
    # every rank: under FSDP all of them gather the shards rank 0 writes
    path = finish_pretraining(trainer)
    if rank == 0:
        # One process trained exactly the recipe's run: the chapters load it. More
        # processes read a global batch N times the preset's, another recipe, so that
        # run stays in its own folder.
        published = publish_pretrained(preset, out) if world == 1 else None
        last = trainer.history[-1]
        print(
            json.dumps(
                {
                    "checkpoint": str(path),
                    "step": last["step"],
                    "loss": round(last["loss"], 4),
                    "val_loss": round(last.get("val_loss", float("nan")), 4),
                    "chapters load it from": str(published) if published else None,
                }
            )
        )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _prepare_data(preset, rank: int, world: int) -> Tokenizer:
    """Rank 0 builds the tokenizer and token files while the others wait at a barrier;
    then they read the cached files."""
    if rank > 0:
        torch.distributed.barrier()
    tokenizer = ensure("tokenizer", preset)
    ensure("tokens", preset)
    if rank == 0 and world > 1:
        torch.distributed.barrier()
    return tokenizer


def _pretrain_trainer(args, preset, out: Path, rank: int, world: int):
    """The recipe's Trainer with this command's logging and checkpoint options."""
    distributed = torch.distributed.is_initialized()
    every = args.log_interval
    if every is None:
        every = 10 if distributed else 0
    interval = args.checkpoint_interval
    trainer = pretrain_trainer(
        preset,
        out,
        rank=rank,
        world_size=world,
        progress=rank == 0 and not every,
        parallel=args.parallel,
        **({"checkpoint_interval": interval} if interval else {}),
        callbacks=(_rank_logger(rank, world, every),) if every else (),
    )
    if distributed:
        held = local_parameter_bytes(trainer.model) / 2**20
        print(
            f"[rank {rank}/{world}] {torch.distributed.get_backend()} | "
            f"{args.parallel} | holds {held:.2f} MiB "
            f"of {preset.model.num_params() * 4 / 2**20:.2f} MiB of fp32 weights",
            flush=True,
        )
    return trainer


def generate_text(args: argparse.Namespace) -> None:
    run = load_run(args.run)  # the model and tokenizer the folder describes
    tokenizer = Tokenizer.load(args.tokenizer) if args.tokenizer else run.tokenizer
    tokenizer.check_compatible(run.model.config.vocab_size)
    ids = generate(
        run.model,
        tokenizer.encode(args.prompt),
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=torch.Generator().manual_seed(args.seed),
    )[0]
    print(args.prompt + tokenizer.decode(ids))


def run_pipeline(args: argparse.Namespace) -> None:
    from .report_card import run_all

    preset = _preset(args.preset, settings=args.set)
    card = run_all(preset, Path(args.out) if args.out else None)
    print(card.markdown())


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")  # bad input: one clear line, no traceback


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m foundry_core",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "run",
        help="build one stage of a preset (and what it needs) into the cache "
        "the chapters read",
    )
    p.add_argument(
        "stage",
        choices=[*STAGES, "pretrain"],
        help="the stage to build ('pretrain' = 'pretrained')",
    )
    _recipe_options(p)
    p.set_defaults(handler=run_stage)
    p = commands.add_parser(
        "prepare", help="build the corpus, tokenizer and token files of a preset"
    )
    _recipe_options(p)
    p.set_defaults(handler=prepare)
    _add_pretrain(commands)
    _add_generate(commands)
    p = commands.add_parser(
        "pipeline",
        help="run every stage (data to export), reusing finished ones, "
        "and write a report card",
    )
    _recipe_options(p)
    p.add_argument(
        "--out",
        help="folder for report.md and report.json (default: artifacts/<preset>)",
    )
    p.set_defaults(handler=run_pipeline)
    return parser


def _recipe_options(p: argparse.ArgumentParser) -> None:
    """--preset and --set, which every command that runs a recipe takes."""
    names = ", ".join(PRESETS)
    p.add_argument(
        "--preset", help=f"one of {names} (default: picked for this machine)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="change one setting of the preset, "
        "e.g. sft.max_steps=300 or train.lr=1e-3 "
        f"(sections: {', '.join(SECTIONS)}); repeat for more",
    )


def _add_pretrain(commands) -> None:
    p = commands.add_parser(
        "pretrain", help="pretrain a model (under torchrun: with DDP)"
    )
    _recipe_options(p)
    p.add_argument(
        "--steps",
        type=int,
        help="train this many steps now (default: to the preset's max_steps)",
    )
    p.add_argument(
        "--out",
        help="run folder for checkpoints "
        "(default: artifacts/<preset>/runs/pretrained-<key>; "
        "a finished one-process run is then also the model the chapters load)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out",
    )
    p.add_argument(
        "--checkpoint-interval",
        type=int,
        help="steps between checkpoints (default: a quarter of "
        "the run, as in chapter 4)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="sequences per micro-batch in each process (default: the "
        "preset's); under torchrun the global batch is N times this",
    )
    p.add_argument(
        "--parallel",
        choices=PARALLEL,
        default="ddp",
        help="under torchrun: ddp replicates the model, fsdp shards it (default: ddp)",
    )
    p.add_argument(
        "--log-interval",
        type=int,
        help="print a line per rank every N steps "
        "(default: 10 under torchrun, else a progress bar)",
    )
    p.set_defaults(handler=pretrain)


def _add_generate(commands) -> None:
    p = commands.add_parser("generate", help="continue a prompt with a trained model")
    p.add_argument(
        "--run",
        required=True,
        help="a run folder (its newest checkpoint) or a checkpoint folder",
    )
    p.add_argument("--prompt", required=True)
    p.add_argument(
        "--tokenizer", help="tokenizer.model (default: the one saved in the run folder)"
    )
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=generate_text)
