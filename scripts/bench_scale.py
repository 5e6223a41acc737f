"""Every pipeline stage at growing catalogue and user counts: wall seconds and peak RSS per stage, growth fitted.

    .venv/bin/python scripts/bench_scale.py --out_dir bench_results/scale       # 10k / 100k / 1M items x 100k users,
                                                                                # + 1M items x 1M users
    .venv/bin/python scripts/bench_scale.py --tiny --out_dir /tmp/scale-tiny    # smoke run, under a minute

For each size (items x users) it generates a synthetic dataset (``recdata.synthetic``) and runs the real pipeline
(``alignrec.pipeline.run_pipeline``) one stage at a time: data (load + clean + split), embeddings (SASRec),
tokenizer (RQ-VAE + item index), tasks, train (a tiny scratch model, ``--train_steps`` steps), evaluate
(``max_examples = --eval_users`` test users, the evaluate stage's seeded sample; synthetic users are independent
seeded draws, so any fixed subset of them is a random sample too) and cache (decode every user, publish, read back). Each stage runs in a forked child of this process (the heavy
imports are paid once, before the fork), in its own process group: wall seconds are the child's, peak RSS is
``wait4``'s ``ru_maxrss`` of the child and its waited-for descendants (the trainer process included). A child
inherits this process's resident imports; their size is recorded as ``baseline_rss_mb``.

A stage that raises is recorded as ``failed: <reason>``, one that runs past ``--stage_limit_s`` is killed and
recorded as ``> limit``; the stages after it at that size are ``skipped``. Results go to ``<out_dir>/scale.json``
after every cell; a rerun keeps finished cells and runs only the rest (``--retry_failed true`` reruns failed and
limit cells). ``scale.md`` holds the table and the growth exponents (least squares slope of log wall seconds, log
CPU seconds and log peak RSS against log items at fixed users, and against log users at fixed items); ``scale.png``
the log-log plot. CPU seconds (``ru_utime + ru_stime``) are reported beside wall seconds because a shared machine
stretches wall time.
Base settings are ``base_config()``; ``--set section.key=value`` overrides any run-config key (as ``alignrec run``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alignrec.pipeline import run_pipeline  # noqa: E402
from alignrec.pipeline.config import apply_overrides, parse_set_options, run_config_from_dict  # noqa: E402
from inference.report_tables import markdown_table  # noqa: E402
from recdata.config import parse_config  # noqa: E402
from recdata.errors import ConfigError  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from recdata.synthetic import SyntheticConfig, generate_synthetic, remove_synthetic  # noqa: E402

logger = logging.getLogger("bench_scale")

STAGES = ("generate", "data", "embeddings", "tokenizer", "tasks", "train", "evaluate", "cache")
# pipeline stages each bench stage runs (the knowledge stage is a no-op with an empty section; it rides with data)
PIPELINE_RANGE = {"data": ("data", "knowledge"), "embeddings": ("embeddings", "embeddings"),
                  "tokenizer": ("tokenizer", "tokenizer"), "tasks": ("tasks", "tasks"), "train": ("train", "train"),
                  "evaluate": ("evaluate", "evaluate"), "cache": ("cache", "cache")}
TWO_LEVELS_FROM = 100_000  # items: the decode-normaliser's children threshold, where two levels keep decoding flat
TINY = {"items": [300, 600], "users": 150, "extra_sizes": [], "interactions_per_user": 8, "train_steps": 4,
        "eval_users": 20, "sasrec_epochs": 1, "rq_epochs": 5, "stage_limit_s": 300.0}


@dataclass
class BenchScaleConfig:
    out_dir: str = field(default="bench_results/scale", metadata={"help": "scale.json / scale.md / scale.png here."})
    work_dir: str = field(default="", metadata={"help": "Data and run folders; default <out_dir>/work."})
    items: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000], metadata={
        "help": "Catalogue sizes, each with --users users."})
    users: int = field(default=100_000, metadata={"help": "Users at every --items size."})
    extra_sizes: list[str] = field(default_factory=lambda: ["1000000x1000000"], metadata={
        "help": "More ITEMSxUSERS sizes (the issue's 1M x 1M run); 'none' for none."})
    interactions_per_user: int = field(default=20, metadata={"help": "Mean history length of the synthetic users."})
    num_scenarios: int = field(default=0, metadata={"help": "Synthetic scenarios (0 = none)."})
    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={"help": f"Subset of {list(STAGES)}."})
    train_steps: int = field(default=50, metadata={"help": "Training steps of the tiny model (fixed, not epochs)."})
    eval_users: int = field(default=1000, metadata={"help": "Test users scored by the evaluate stage."})
    sasrec_epochs: int = field(default=1, metadata={"help": "SASRec epochs of the embeddings stage."})
    rq_epochs: int = field(default=150, metadata={"help": "RQ-VAE epochs (150 = the shipped default)."})
    num_levels: str = field(default="auto", metadata={
        "help": "RQ levels before the item-id level: auto = 1 below 100,000 items, 2 from there (the layout whose "
                "decode cost per user stays flat from 10k to 1M items, docs/scale.md#decode-normaliser); or one "
                "integer for every size."})
    stage_limit_s: float = field(default=3600.0, metadata={"help": "A stage running longer is killed: '> limit'."})
    set: list[str] = field(default_factory=list, metadata={"help": "Run-config overrides, section.key=value."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic data."})
    tiny: bool = field(default=False, metadata={"help": f"Smoke run: {TINY} (explicit flags are ignored)."})
    retry_failed: bool = field(default=False, metadata={"help": "Rerun cells recorded as failed or > limit."})

    def __post_init__(self) -> None:
        if self.tiny:
            for key, value in TINY.items():
                setattr(self, key, value)
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown:
            raise ConfigError(f"stages {unknown} unknown; choose from {list(STAGES)}")
        self.extra_sizes = [s for s in self.extra_sizes if str(s).lower() != "none"]
        for size in self.extra_sizes:
            parse_size(size)
        if self.num_levels != "auto" and not (str(self.num_levels).isdigit() and int(self.num_levels) >= 1):
            raise ConfigError(f"num_levels must be auto or an integer >= 1, got {self.num_levels!r}")
        if min(self.users, self.train_steps, self.eval_users, self.sasrec_epochs, self.rq_epochs, *self.items) < 1:
            raise ConfigError("users, train_steps, eval_users, sasrec_epochs, rq_epochs and items must be >= 1")

    def levels(self, items: int) -> int:
        """RQ levels before the item-id level at a catalogue of ``items``."""
        if self.num_levels == "auto":
            return 1 if items < TWO_LEVELS_FROM else 2
        return int(self.num_levels)

    def sizes(self) -> list[tuple[int, int]]:
        return sorted({*((n, self.users) for n in self.items), *map(parse_size, self.extra_sizes)},
                      key=lambda s: (s[1], s[0]))

    def settings(self) -> dict[str, Any]:
        """What changes a measurement: cells measured under other settings are not mixed in one table."""
        keep = ("interactions_per_user", "num_scenarios", "train_steps", "eval_users", "sasrec_epochs", "rq_epochs",
                "num_levels", "set", "seed")
        return {k: v for k, v in asdict(self).items() if k in keep}


def parse_size(text: str) -> tuple[int, int]:
    items, sep, users = str(text).lower().partition("x")
    if not sep or not items.isdigit() or not users.isdigit() or min(int(items), int(users)) < 1:
        raise ConfigError(f"extra_sizes entry {text!r} is not ITEMSxUSERS, e.g. 1000000x1000000")
    return int(items), int(users)


def base_config(cfg: BenchScaleConfig, data_dir: Path, work: Path, items: int) -> dict[str, Any]:
    """The run config of one size: the scratch recipe's shape (configs/ml100k_scratch.yaml) at tiny width, with
    ``cfg.levels(items)`` RQ levels before the item-id level (the auto codebook balances them)."""
    data = {"path": str(data_dir), "format": "tabular", "max_history": 50, "keep_unused_items": True}
    if cfg.num_scenarios:
        data["scenario_item_field"] = "scenario"
    return {
        "data": data,
        "embeddings": {"source": "cf", "sasrec_dim": 32, "sasrec_heads": 1, "sasrec_layers": 1,
                       "sasrec_epochs": cfg.sasrec_epochs, "sasrec_batch_size": 256, "sasrec_seed": 42,
                       "use_cache": False, "cache_dir": str(work / "embedding_cache")},
        "tokenizer": {"num_levels": cfg.levels(items), "item_id_level": True, "codebook_size": 0, "align_weight": 0.0,
                      "rq_epochs": cfg.rq_epochs, "rq_num_threads": 1, "rq_seed": 42},
        "tasks": {"weights": '{"seqrec_full": 1.0}', "max_history": 50, "seed": 42},
        "train": {"launcher": "python", "model_init": "scratch", "tokenizer_name_or_path": "codes_only",
                  "finetune_mode": "full", "scratch_architecture": "phi", "scratch_layers": 2, "scratch_hidden": 64,
                  "scratch_heads": 2, "scratch_intermediate": 128, "scratch_max_positions": 128,
                  "new_rows_init": "item_vectors", "item_head_weight": 4.0, "learning_rate": 3.0e-3,
                  "per_device_train_batch_size": 32, "max_steps": cfg.train_steps, "max_length": 128,
                  "logging_steps": max(1, cfg.train_steps // 5), "eval_strategy": "no", "save_strategy": "no",
                  "report_to": "none", "dataloader_num_workers": 0, "seed": 42},
        "evaluate": {"ks": [10, 20], "num_beams": 30, "batch_size": 64, "max_examples": cfg.eval_users},
        "cache": {"k": 20, "batch_size": 64},
    }


def preload() -> None:
    """Import what every stage imports (run-config validation parses the train section with trl) once, before any
    fork: a stage's cell then times the stage, not the imports. Imports start no threads, so forking stays safe."""
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import alignrec.pipeline.stages  # noqa: F401
    import trainer.config  # noqa: F401


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(stage: str, cfg: BenchScaleConfig, size: tuple[int, int], work: Path) -> dict[str, Any]:
    """The measured work of one cell (runs in the forked child)."""
    items, users = size
    data_dir = work / "data" / f"{items}x{users}"
    if stage == "generate":
        remove_synthetic(data_dir)  # the generator's own files only: the cell times generating, not a reuse
        manifest = generate_synthetic(SyntheticConfig(
            out_dir=str(data_dir), num_items=items, num_users=users, interactions_per_user=cfg.interactions_per_user,
            num_scenarios=cfg.num_scenarios, seed=cfg.seed), progress=False)
        return {"interactions": manifest["interactions"]}
    run_cfg = run_config_from_dict({"name": f"{items}x{users}", "runs_dir": str(work / "runs"),
                                    **base_config(cfg, data_dir, work, items)}, source="bench_scale")
    if cfg.set:
        run_cfg = apply_overrides(run_cfg, parse_set_options(cfg.set))
    start, until = PIPELINE_RANGE[stage]
    run_pipeline(run_cfg, start=start, until=until, force=True)
    record = json.loads((run_cfg.run_dir / start / "stage.json").read_text())
    return {"stage_seconds": record["seconds"], "summary": record["summary"]}


def run_cell(stage: str, cfg: BenchScaleConfig, size: tuple[int, int], work: Path) -> dict[str, Any]:
    """Fork, run the cell, wait with the time limit; the record: status, seconds, peak RSS, reason."""
    result = work / "cells" / f"{size[0]}x{size[1]}-{stage}.json"
    log = work / "logs" / f"{size[0]}x{size[1]}-{stage}.log"
    for path in (result, log):
        path.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: own process group, output to the cell log, never returns
        code = 1
        try:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  (whatever wrapped the parent's)
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            logging.basicConfig(level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            out = _child(stage, cfg, size, work)
            result.write_text(json.dumps({"status": "ok", **out}, default=str))
            code = 0
        except BaseException as exc:  # recorded, never raised: the benchmark goes on
            traceback.print_exc()
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            result.write_text(json.dumps({"status": "failed", "reason": reason[:300]}))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = started + cfg.stage_limit_s
    try:
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.perf_counter() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.2)
    except BaseException:  # Ctrl-C: the child's group dies with the benchmark
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.killpg(pid, signal.SIGKILL)
            os.wait4(pid, 0)
        raise
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {"items": size[0], "users": size[1], "stage": stage, "seconds": round(seconds, 3),
                              "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "log": str(log)}
    if seconds > cfg.stage_limit_s and not result.is_file():
        return {**record, "status": "limit", "reason": f"> {cfg.stage_limit_s:g} s"}
    if not result.is_file():
        return {**record, "status": "failed", "reason": f"exit status {os.waitstatus_to_exitcode(status)}, no record"}
    return {**record, **json.loads(result.read_text())}


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two distinct x)."""
    if len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def growth(cells: dict[str, dict[str, Any]], stages: list[str]) -> list[dict[str, Any]]:
    """Per stage and fixed axis: exponents of seconds and peak RSS against items (users fixed) or users."""
    fits = []
    for stage in stages:
        ok = [c for c in cells.values() if c["stage"] == stage and c["status"] == "ok"]
        for axis, fixed in (("items", "users"), ("users", "items")):
            for value in sorted({c[fixed] for c in ok}):
                pts = [c for c in ok if c[fixed] == value]
                xs = [c[axis] for c in pts]
                exps = {f"{name}_exponent": fit_exponent(xs, [max(c[col], 1e-9) for c in pts])
                        for name, col in (("time", "seconds"), ("cpu", "cpu_seconds"), ("rss", "peak_rss_mb"))}
                if exps["time_exponent"] is not None:
                    fits.append({"stage": stage, "against": axis, fixed: value, "points": len(pts),
                                 **{k: round(v, 3) for k, v in exps.items()}})
    return fits


def cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "not run"
    if cell["status"] == "ok":
        return f"{cell['seconds']:.1f} s ({cell['cpu_seconds']:.1f} s CPU), {cell['peak_rss_mb']:,.0f} MB"
    if cell["status"] == "limit":
        return cell["reason"]
    return f"{cell['status']}: {cell.get('reason', '')}".replace("|", "/")


def render(results: dict[str, Any], sizes: list[tuple[int, int]], stages: list[str]) -> str:
    cells = results["cells"]
    header = ["stage", *[f"{i:,} items x {u:,} users" for i, u in sizes]]
    rows = [[s, *[cell_text(cells.get(f"{i}x{u}/{s}")) for i, u in sizes]] for s in stages]
    fit_rows = [[f["stage"], f["against"], f"{f['users' if f['against'] == 'items' else 'items']:,}", str(f["points"]),
                 f"{f['time_exponent']:.2f}", f"{f['cpu_exponent']:.2f}", f"{f['rss_exponent']:.2f}"]
                for f in results["growth"]]
    lines = [f"# Scale benchmark ({results['machine']})", "",
             "Wall seconds, CPU seconds and peak RSS (the stage's process and its children) per stage; measured by "
             "`scripts/bench_scale.py`, settings below.", "", *markdown_table(header, rows), "",
             "## Growth exponents", "",
             "Least-squares slope of log wall seconds, log CPU seconds and log peak RSS against log items (users "
             "fixed) or log users "
             "(items fixed); 1.0 = linear. Only stages with two or more finished sizes on that axis.", "",
             *markdown_table(["stage", "against", "fixed at", "points", "wall exponent", "CPU exponent",
                              "RSS exponent"],
                             fit_rows), "",
             f"Settings: `{json.dumps(results['settings'], sort_keys=True)}`; stage limit "
             f"{results['stage_limit_s']:g} s; a forked stage starts from this process's imports "
             f"({results['baseline_rss_mb']:,.0f} MB resident).", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], stages: list[str], path: Path) -> bool:
    """Log-log seconds and peak RSS against items, a line per stage and user count; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no %s", path)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ok = [c for c in results["cells"].values() if c["status"] == "ok"]
    for stage in stages:
        for users in sorted({c["users"] for c in ok}):
            pts = sorted((c["items"], c["seconds"], c["peak_rss_mb"]) for c in ok
                         if c["stage"] == stage and c["users"] == users)
            if not pts:
                continue
            for ax, col in zip(axes, (1, 2), strict=True):
                ax.plot([p[0] for p in pts], [p[col] for p in pts], marker="o", label=f"{stage} ({users:,} users)")
    for ax, label in zip(axes, ("wall seconds", "peak RSS (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def load_results(path: Path, cfg: BenchScaleConfig) -> dict[str, Any]:
    if not path.is_file():
        return {"settings": cfg.settings(), "cells": {}}
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("settings") != cfg.settings():
        raise ConfigError(f"{path} holds cells measured with settings {results.get('settings')}, not "
                          f"{cfg.settings()}; choose another --out_dir (or delete that file) to start over")
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([BenchScaleConfig], argv)
    out = Path(cfg.out_dir)
    work = Path(cfg.work_dir) if cfg.work_dir else out / "work"
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "scale.json"
    results = load_results(json_path, cfg)
    preload()

    results.update({"machine": f"{os.cpu_count()} CPUs, {os.uname().machine}", "stage_limit_s": cfg.stage_limit_s,
                    "baseline_rss_mb": round(_rss_mb(), 1)})
    sizes, stages = cfg.sizes(), [s for s in STAGES if s in cfg.stages]
    for size in sizes:
        blocked = ""
        for stage in stages:
            key = f"{size[0]}x{size[1]}/{stage}"
            old = results["cells"].get(key)
            if old and (old["status"] == "ok" or (old["status"] in ("failed", "limit") and not cfg.retry_failed)):
                logger.info("%-28s kept (%s)", key, cell_text(old))
                blocked = "" if old["status"] == "ok" else stage
                continue
            if blocked:
                cell = {"items": size[0], "users": size[1], "stage": stage, "status": "skipped",
                        "reason": f"{blocked} did not finish"}
            else:
                logger.info("%-28s running", key)
                cell = run_cell(stage, cfg, size, work)
                blocked = "" if cell["status"] == "ok" else stage
            results["cells"][key] = cell
            logger.info("%-28s %s", key, cell_text(cell))
            atomic_write_json(json_path, results)
    results["growth"] = growth(results["cells"], stages)
    atomic_write_json(json_path, results)
    atomic_write_text(out / "scale.md", render(results, sizes, stages))
    plotted = plot(results, stages, out / "scale.png")
    logger.info("wrote %s, %s%s", json_path, out / "scale.md", f", {out / 'scale.png'}" if plotted else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
