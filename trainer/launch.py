"""Launcher glue: the same entry runs under ``deepspeed``, ``torchrun`` and plain ``python``.

``deepspeed`` passes ``--local_rank=N`` (TrainingArguments 5.x has no such field) and sets RANK/WORLD_SIZE;
plain ``python ... --deepspeed X.json`` has no launcher, so without the env defaults set here DeepSpeed would
fall into MPI discovery. DeepSpeed JIT-builds its CPU ops once; the build cache is kept under alignrec home.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from recdata.paths import torch_extensions_dir


def strip_local_rank(argv: Sequence[str]) -> list[str]:
    """Drop ``--local_rank N`` / ``--local-rank=N``: launchers also export LOCAL_RANK, which is what counts.

    (Exporting it ourselves would make a plain ``python`` run look distributed and wait for a rendezvous.)
    """
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in ("--local_rank", "--local-rank"):
            next(it, None)
        elif not arg.startswith(("--local_rank=", "--local-rank=")):
            out.append(arg)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_single_process_env() -> None:
    """Env a 1-process distributed run needs when no launcher set it (no-op under deepspeed/torchrun)."""
    if "WORLD_SIZE" in os.environ or "RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"), WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def uses_deepspeed(argv: Sequence[str]) -> bool:
    return any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv)


def prepare_launch(argv: Sequence[str]) -> list[str]:
    """Normalise argv and env for whichever launcher started us; returns the argv to parse."""
    argv = strip_local_rank(argv)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if uses_deepspeed(argv):
        set_single_process_env()
    return argv


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0
