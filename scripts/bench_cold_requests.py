"""The requests-in-words table of ``bench_cold.py --requests_file``: the cold run's served model beside the MiniLM
retriever on LLM-written requests (``alignrec tasks requests``) about the scored part's targets.

Each request task (``request``: the request alone; ``request_history``: with the user's history) runs through
``inference.requests.evaluate_requests`` on the run's served model (``pipeline.sections.served_model_dir``), its
``data/split`` and its ``tasks/dataset`` (the leak check's training rows), with the run's ``evaluate`` section for
decoding, into ``<run_dir>/requests_<task>/``. Only the scored part's requests are handed over (a copy of their
lines, ``<run_dir>/requests_<task>.jsonl``): a row of the other part is parsed for its ``part`` label and dropped,
so a valid table never reads a test request. One exception keeps the library's protocol: on ``--part test``,
``request_history`` also gets the valid requests its retriever's mix weight is chosen on (never scored). Per task
and row: Recall/NDCG@10 with a 95% percentile bootstrap over the requests, and the paired bootstrap of ours -
retriever over the same requests. ``request_prior_weights`` adds the ``alignrec + request prior`` row (the request's
sentence vector as a content prior in the model's item head, its weight chosen on the valid requests:
``inference.requests``; on ``--part test`` every task then also reads the valid requests, never scored) with its
own paired bootstrap against the retriever. A model whose tasks build has no ``query2item`` row was never trained
to answer a request; its rows are still scored and the Markdown says so.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_quality import compared_metrics  # noqa: E402

from alignrec.pipeline.config import STAGE_NAMES, RunConfig  # noqa: E402
from alignrec.pipeline.runner import StageContext  # noqa: E402
from alignrec.pipeline.sections import build_section, evaluate_classes, served_model_dir  # noqa: E402
from inference.report_tables import bootstrap_table, estimate_cell, markdown_table, metric_label  # noqa: E402
from inference.requests import PRIOR_ROW, REQUEST_TASKS, RETRIEVER_ROW  # noqa: E402
from inference.significance import bootstrap_interval, paired_bootstrap  # noqa: E402
from recdata.errors import InputFileError, UserError  # noqa: E402
from recdata.io import atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["NOT_TRAINED", "render_requests", "request_table"]

OURS = "alignrec"
PARTS = ("valid", "test")
QUERY_TASK = "query2item"
NOT_TRAINED = f"(model not trained on {QUERY_TASK})"
# evaluate keys the request tasks take none of (next-item rows / options) or that would score fewer requests
NOT_FOR_REQUESTS = ("text_retriever_baseline", "item_vector_prior_weight", "max_examples")


def parts_read(task: str, part: str, prior: bool = False) -> set[str]:
    """The parts a task reads: the scored one, plus valid on test for ``request_history``'s mix weight and for
    the request prior's weight (``prior``)."""
    return {part, "valid"} if task == "request_history" or prior else {part}


def part_lines(path: Path, parts: set[str]) -> list[str]:
    """The lines of ``path`` whose row is about one of ``parts``; any other row is looked at for its label only.
    A line whose part cannot be told raises (one line): the other part could not be kept out."""
    kept = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            label = json.loads(line).get("part")
        except (json.JSONDecodeError, AttributeError):
            raise UserError(f"{path}:{lineno}: not a JSON request row, so its part cannot be told; rewrite it with "
                            "`alignrec tasks requests`") from None
        if label not in PARTS:
            raise UserError(f"{path}:{lineno}: part {label!r} is neither valid nor test, so the other part's requests "
                            "cannot be kept out; rewrite it with `alignrec tasks requests`")
        if label in parts:
            kept.append(line)
    return kept


def check_part_examples(rows: Sequence[Mapping[str, Any]], split: Any, source: Path) -> None:
    """Refuse a row whose (user, target) is no example of the part it names: a mislabelled row would score the
    other part's target."""
    pairs = {}
    for part in {r["part"] for r in rows}:
        examples = split.eval_examples(part)
        pairs[part] = set(zip(examples["user_id"], examples["target"], strict=True))
    for row in rows:
        if (row["user_id"], row["target"]) not in pairs[row["part"]]:
            raise UserError(f"{source}: request {row['request_id']!r} (part {row['part']}) names user "
                            f"{row['user_id']!r} and target {row['target']!r}, no {row['part']} example of the "
                            "run's split: written for another split, or its part is mislabelled")


def trained_tasks(tasks_dir: Path) -> list[str]:
    """The tasks the model trained on: the ``task`` column of the build's training rows."""
    import datasets

    if not tasks_dir.is_dir():
        raise InputFileError(f"{tasks_dir} does not exist: the run has no tasks build; run its tasks stage")
    train = datasets.load_from_disk(str(tasks_dir))["train"]
    if "task" not in train.column_names:
        raise InputFileError(f"{tasks_dir}: training rows have no task column; rebuild them (`alignrec tasks build`)")
    return sorted(train.unique("task"))


def served_model(run_cfg: RunConfig) -> Path:
    """The model the run's evaluate stage scored (SFT's, or DPO's with the preference stage on)."""
    run_dir = run_cfg.run_dir
    ctx = StageContext(run_dir, run_dir / "evaluate", run_cfg.sections.get("evaluate", {}), run_cfg,
                       {stage: run_dir / stage for stage in STAGE_NAMES})
    model_dir = served_model_dir(ctx)
    if not model_dir.is_dir():
        raise InputFileError(f"{model_dir} does not exist: the run has no trained model; run it through evaluate")
    return model_dir


def request_config(run_cfg: RunConfig, model_dir: Path, task: str, part: str, requests_file: Path,
                   prior_weights: Sequence[float] = ()) -> Any:
    """``EvaluateConfig`` of one request task: the run's evaluate section (decoding, ks, retriever encoder) on
    ``model_dir``, the run's split and tasks build, every request of the file; ``prior_weights``: the request
    prior's grid (empty: no such row)."""
    run_dir = run_cfg.run_dir
    section = dict(run_cfg.sections.get("evaluate", {}))
    dropped = sorted(k for k in NOT_FOR_REQUESTS if section.pop(k, None))
    if dropped:
        logger.info("request tasks: %s not applied (next-item options; every request is scored)", dropped)
    section.update({"task": task, "part": part, "requests_file": str(requests_file), "retriever_baseline": True,
                    "tasks_dir": str(run_dir / "tasks" / "dataset"), "request_prior_weights": list(prior_weights)})
    injected = {"model_dir": str(model_dir), "split_dir": str(run_dir / "data" / "split"),
                "out_dir": str(run_dir / f"requests_{task}")}
    (cfg,) = build_section(evaluate_classes(), section, injected, "evaluate")
    return cfg


def run_task(run_cfg: RunConfig, model_dir: Path, task: str, part: str, requests_file: Path,
             split: Any, prior_weights: Sequence[float] = ()) -> tuple[Path, set[str]]:
    """Score ``task`` on the part's requests; ``(its out_dir, the scored request ids)``."""
    from inference.requests import evaluate_requests
    from sft_tasks import load_requests

    lines = part_lines(requests_file, parts_read(task, part, bool(prior_weights)))
    if not any(json.loads(line)["part"] == part for line in lines):
        raise UserError(f"{requests_file} holds no {part} request; write it with `alignrec tasks requests`")
    copy = run_cfg.run_dir / f"requests_{task}.jsonl"
    atomic_write_text(copy, "\n".join(lines) + "\n")
    rows = load_requests(copy, split.dataset.item_ids())
    check_part_examples(rows, split, requests_file)
    cfg = request_config(run_cfg, model_dir, task, part, copy, prior_weights)
    logger.info("%s: %d %s requests on %s", task, sum(r["part"] == part for r in rows), part, cfg.model_dir)
    evaluate_requests(cfg)
    return Path(cfg.out_dir), {r["request_id"] for r in rows if r["part"] == part}


def task_rows(out_dir: Path, scored: set[str], resamples: int) -> dict[str, Any]:
    """Ours and the retriever of one task: n, mean [95%] per metric, the paired ours - retriever, the mix weight."""
    from recdata.evaluation import load_per_user

    written = json.loads((out_dir / "metrics.json").read_text())
    names = [OURS, *([PRIOR_ROW] if "request_prior" in written else []), RETRIEVER_ROW]
    tables = load_per_user(out_dir, names)
    ids = [str(u) for u in tables[OURS]["user_id"]]
    if set(ids) != scored or any([str(u) for u in tables[name]["user_id"]] != ids for name in names):
        raise ValueError(f"{out_dir}: scored other requests than the {len(scored)} handed over")
    metrics = compared_metrics(tables[OURS])
    rows = {name: {m: bootstrap_interval(np.asarray(tables[name][m], dtype=np.float64), resamples=resamples)
                   for m in metrics} for name in names}

    def versus(name: str) -> dict[str, Any]:
        return {m: paired_bootstrap(dict(zip(ids, tables[name][m], strict=True)),
                                    dict(zip(ids, tables[RETRIEVER_ROW][m], strict=True)), resamples=resamples)
                for m in metrics}

    out = {"n": len(ids), "metrics": list(metrics), "mix_weight": written["retriever"]["mix_weight"], "rows": rows,
           "versus_retriever": versus(OURS)}
    if "request_prior" in written:
        out["request_prior"] = {**written["request_prior"], "versus_retriever": versus(PRIOR_ROW)}
    return out


def request_table(run_cfg: RunConfig, requests_file: Path, part: str, resamples: int,
                  prior_weights: Sequence[float] = ()) -> dict[str, Any]:
    """Both request tasks on the run's served model: the ``requests`` entry of the bench's JSON."""
    from recdata import SplitDataset

    split = SplitDataset.load(run_cfg.run_dir / "data" / "split")
    trained = trained_tasks(run_cfg.run_dir / "tasks" / "dataset")
    model_dir = served_model(run_cfg)
    tasks = {}
    for task in REQUEST_TASKS:
        out_dir, scored = run_task(run_cfg, model_dir, task, part, Path(requests_file), split, prior_weights)
        tasks[task] = task_rows(out_dir, scored, resamples)
    return {"requests_file": str(requests_file), "part": part, "model_dir": str(model_dir),
            "trained_tasks": trained, "trained_on_query2item": QUERY_TASK in trained,
            "metrics": tasks[REQUEST_TASKS[0]]["metrics"], "tasks": tasks}


def render_requests(result: Mapping[str, Any], resamples: int, heading: str = "##") -> list[str]:
    """The Markdown lines of the request table: a row per task and recommender, then the paired table(s)."""
    metrics, part, tasks = result["metrics"], result["part"], result["tasks"]
    trained = "" if result["trained_on_query2item"] else f" {NOT_TRAINED}"
    with_prior = {t: i["request_prior"] for t, i in tasks.items() if "request_prior" in i}
    other = "its test requests are not read" if part == "valid" else \
        "its valid requests are read only for the weights chosen on them"
    header = ["task", "recommender", "n", *(f"{metric_label(m)} [95%]" for m in metrics)]
    body = [[task, name, str(info["n"]), *(estimate_cell(row[m]) for m in metrics)]
            for task, info in tasks.items() for name, row in info["rows"].items()]
    history = tasks.get("request_history", {})
    counts = ", ".join(f"{task}: {info['n']}" for task, info in tasks.items())
    prior_sentence = ""
    if with_prior:
        weights = ", ".join(f"{t} {p['weight']:g}" for t, p in with_prior.items())
        prior_sentence = (f" {PRIOR_ROW}: the model's decoding with the request's sentence vector (the retriever's) "
                          "as a content prior in its item head, so the words are read by the sentence encoder and "
                          f"the history and codes by the model; prior weight ({weights}) chosen on the valid "
                          "requests by NDCG@10.")
    lines = [f"{heading} Requests in words, {part} part{trained}", "",
             f"{counts} {part} requests from "
             f"`{Path(result['requests_file']).name}` ({other}), asked to the run's model ({OURS}{trained}) and "
             f"the {RETRIEVER_ROW} (request_history: the query mixes in the mean history vector with weight "
             f"{history.get('mix_weight', 0):g}, chosen on the valid requests by NDCG@10).{prior_sentence} 95% "
             "percentile bootstrap over the requests.", "",
             *markdown_table(header, body), "",
             f"Paired bootstrap of ours ({OURS}) - {RETRIEVER_ROW} over the same requests (95%, {resamples:,} "
             "resamples):", "",
             *bootstrap_table({t: i["versus_retriever"] for t, i in tasks.items()}, metrics,
                              first=f"task: {OURS} - {RETRIEVER_ROW}")]
    if with_prior:
        lines += ["", f"Paired bootstrap of {PRIOR_ROW} - {RETRIEVER_ROW} over the same requests:", "",
                  *bootstrap_table({t: p["versus_retriever"] for t, p in with_prior.items()}, metrics,
                                   first=f"task: {PRIOR_ROW} - {RETRIEVER_ROW}")]
    return lines
