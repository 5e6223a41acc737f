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


PR_SET_PDEATHSIG = 1  # linux/prctl.h
CHILD_STOP_SECONDS = 30.0  # how long a stopped child gets to exit after SIGTERM before SIGKILL


def _die_with_parent_hook():
    """A ``preexec_fn`` that makes the child (and, as a process-group leader, its launcher's workers when it stops
    them) get SIGTERM when this process dies, even by ``kill -9``: Linux's parent-death signal. None elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # resolved before the fork: no dlopen in the child
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def stop_child(proc, timeout: float = CHILD_STOP_SECONDS) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``timeout`` seconds."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Run a training entry as a child that never outlives this process; returns its exit status.

    The child leads its own process group and gets the parent-death signal (``_die_with_parent_hook``), so a
    ``kill -9`` of ``alignrec train`` / ``alignrec run`` stops it instead of leaving an orphan that keeps writing
    the run. Ctrl-C (or SIGTERM) here stops the child's group and returns 130 / 143: the run folder is left as a
    kill leaves it, and a rerun resumes from the newest complete checkpoint (``trainer.train.resolve_resume``).
    """
    import signal
    import subprocess

    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509
                            start_new_session=True)

    def _forward(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    import threading

    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread only
    previous = signal.signal(signal.SIGTERM, _forward) if main else None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_child(proc)
        return 130
    except SystemExit:
        stop_child(proc)
        return 143
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            stop_child(proc)
