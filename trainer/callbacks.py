"""Trainer callbacks: metrics as JSON lines (resume-safe) and a PNG loss curve at the end.

TensorBoard comes from ``report_to=tensorboard`` and the tqdm bar from the HF Trainer (rank 0 only); the
held-out ``seqrec`` loss is the Trainer's periodic evaluation on ``eval_dataset={"seqrec": ...}``, which logs
``eval_seqrec_loss``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from recdata.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno} is not valid JSON ({exc}); delete the line or the file") from exc
    return rows


class JsonlMetricsCallback(TrainerCallback):
    """Append every log dict (with step and epoch) to ``metrics.jsonl`` on the main process.

    On resume, rows logged after the checkpoint's step are dropped first, so the file reads as one clean run.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.is_file():
            keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class TimeLimitCallback(TrainerCallback):
    """Stop after ``seconds`` of training; every rank takes the same decision (rank clocks may differ)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        over = time.monotonic() - self.started > self.seconds
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            flag = torch.tensor([int(over)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        if over and not control.should_training_stop:
            logger.warning("max_train_seconds=%s reached at step %d: stopping and saving", self.seconds, state.global_step)
            control.should_training_stop = True
        return control


def plot_loss_curve(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Training loss and every ``eval_*_loss`` against step; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    series: dict[str, list[tuple[int, float]]] = {}
    ranking: dict[str, list[tuple[int, float]]] = {}  # eval_ranking_*@10, on a second axis
    for row in rows:
        for key, value in row.items():
            if not isinstance(value, float | int):
                continue
            if key == "loss" or (key.startswith("eval_") and key.endswith("loss")):
                series.setdefault(key, []).append((row["step"], float(value)))
            elif key.startswith("eval_ranking_") and "@" in key:
                ranking.setdefault(key, []).append((row["step"], float(value)))
    if not series:
        logger.warning("no loss values in %s; no loss curve written", metrics_path)
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, points in sorted(series.items()):
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ranking:
        ax2 = ax.twinx()
        for key, points in sorted(ranking.items()):
            steps, values = zip(*points, strict=True)
            ax2.plot(steps, values, linestyle="--", marker="s", label=key)
        ax2.set_ylabel("validation ranking metric")
        more = ax2.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out_path
