"""``alignrec train``: start trainer/sft.py under the right launcher (a thin wrapper, one subprocess).

    alignrec train --config CONFIG.yaml [sft flags...]                            # auto launcher
    alignrec train --launcher deepspeed --num_gpus 4 --config C.yaml --deepspeed ds_configs/zero2.json

Every flag except --launcher / --num_gpus / --dry_run goes to trainer/sft.py unchanged; the config is
parsed here first, so a typo fails before any launcher starts.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ENTRY = Path(__file__).resolve().parent / "sft.py"
DPO_ENTRY = Path(__file__).resolve().parent / "dpo.py"  # the preference stage launches it the same way
LAUNCHERS = ("auto", "python", "deepspeed", "torchrun")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="SFT the LLM on the alignment tasks (LoRA / QLoRA / full)",
                              add_help=False)
    p.set_defaults(handler=_run_train)
    from trainer.add_items import register as register_add_items

    register_add_items(subparsers)  # a trained model's next step: items that arrived after training


def _launch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignrec train", add_help=False)
    p.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                   help="auto: deepspeed when --deepspeed is given and GPUs exist, torchrun for >1 GPU, else python")
    p.add_argument("--num_gpus", type=int, default=0, help="processes per node (0 = all visible GPUs, or 1)")
    p.add_argument("--dry_run", action="store_true", help="print the command instead of running it")
    return p


def print_short_help() -> None:
    """Our options first (launcher, model, data, run); SFTConfig's ~200 flags only behind --help_all."""
    from recdata.config import build_parser
    from trainer.config import AlignRecTrainArguments, DataArguments, ModelArguments

    launch = _launch_parser()
    launch.usage = "alignrec train [--launcher L] [--num_gpus N] [--dry_run] --config C.yaml [flags ...]"
    launch.print_help()
    print()
    ours = build_parser([ModelArguments, DataArguments, AlignRecTrainArguments])
    ours.prog, ours.usage, ours.epilog = "alignrec train", argparse.SUPPRESS, None
    ours.print_help()
    print("\nTrainer arguments: every trl SFTConfig / transformers TrainingArguments flag is accepted too "
          "(--output_dir, --learning_rate, --num_train_epochs, --per_device_train_batch_size, --eval_strategy, "
          "--deepspeed, ...); `alignrec train --help_all` lists all of them.")


def build_command(launcher: str, num_gpus: int, rest: list[str], entry: Path = ENTRY) -> list[str]:
    import torch

    gpus = torch.cuda.device_count()
    n = num_gpus or max(gpus, 1)
    wants_ds = any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in rest)
    if launcher == "auto":
        launcher = "deepspeed" if wants_ds and gpus else "torchrun" if n > 1 else "python"
    if launcher == "python":
        return [sys.executable, str(entry), *rest]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), str(entry), *rest]
    beside = Path(sys.executable).with_name("deepspeed")  # this environment's launcher before any on PATH
    deepspeed = str(beside) if beside.exists() else shutil.which("deepspeed") or "deepspeed"
    return [deepspeed, "--num_gpus", str(n), str(entry), *rest]


def _run_train(args, argv: list[str]) -> int:
    from trainer.config import parse_train_config
    from trainer.launch import strip_local_rank

    launch, rest = _launch_parser().parse_known_args(argv)
    if "--help_all" in rest:
        parse_train_config(["--help"])  # exits after printing every training flag (SFTConfig's too)
    if "-h" in rest or "--help" in rest:
        print_short_help()
        return 0
    _, data_args, _, _ = parse_train_config(strip_local_rank(rest))  # fail fast on typos / bad values
    cmd = build_command(launch.launcher, launch.num_gpus, rest)
    logger.info("launching: %s", " ".join(cmd))
    if launch.dry_run:
        print(" ".join(cmd))
        return 0
    from trainer.train import load_train_item_tokenizer

    load_train_item_tokenizer(data_args)  # fail fast on a missing dataset_dir or tasks of another tokenizer
    from trainer.launch import run_child

    return run_child(cmd)  # the child dies with this process; a rerun resumes from its newest checkpoint
