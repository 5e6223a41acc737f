"""``runs/<name>/report.md``: what a run produced, read back from each stage's ``stage.json`` and files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignrec.pipeline.runner import StageResult, read_stage_record
from alignrec.pipeline.stages.evaluate import SFT_ROW
from recdata.io import atomic_write_text


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]]


def _link(run_dir: Path, path: Path, alt: str) -> list[str]:
    return [f"![{alt}]({path.relative_to(run_dir).as_posix()})", ""] if path.is_file() else []


def _preference_lines(run_dir: Path, summaries: dict[str, dict[str, Any]]) -> list[str]:
    """DPO: how it trained, and SFT vs SFT+DPO on the evaluate stage's users (rows alignrec_sft / alignrec)."""
    pref = summaries.get("preference")
    if not pref:
        return []
    pairs = pref.get("pairs") or {}
    lines = ["", "## Preference alignment (DPO on top of SFT)", ""]
    lines += _table(["negatives", "per prompt", "train pairs", "beta", "wall time (s)", "first loss", "last loss",
                     "last reward accuracy", "last held-out reward accuracy"],
                    [[pairs.get("strategy"), pairs.get("negatives_per_prompt"), pairs.get("train_pairs"),
                      pref.get("beta"), f"{pref.get('seconds', 0.0):.1f}", pref.get("first_loss"), pref.get("last_loss"),
                      pref.get("last_reward_accuracy"), pref.get("last_eval_reward_accuracy")]])
    metrics_json = run_dir / "evaluate" / "metrics.json"
    reports = json.loads(metrics_json.read_text()).get("recommenders", {}) if metrics_json.is_file() else {}
    if SFT_ROW in reports and "alignrec" in reports:
        sft, dpo = reports[SFT_ROW]["overall"], reports["alignrec"]["overall"]
        cols = [c for c in sorted(sft, key=lambda c: (c.split("@")[0], int(c.split("@")[1]))) if c in dpo]
        lines += ["", f"Same {reports['alignrec']['n_examples']:,} users, same beam search (evaluate stage):", ""]
        lines += _table(["model", *[c.replace("recall", "Recall").replace("ndcg", "NDCG") for c in cols]],
                        [["SFT", *[sft[c] for c in cols]], ["SFT + DPO", *[dpo[c] for c in cols]]])
    return lines + [""] + _link(run_dir, run_dir / "preference" / "model" / "loss_curve.png", "DPO loss curve")


def write_report(run_dir: Path, results: list[StageResult], source: str) -> Path:
    off = {r.name for r in results if r.status == "off"}  # an off stage's folder is left alone, never reported
    records = {r.name: {} if r.name in off else read_stage_record(run_dir / r.name) or {} for r in results}
    summaries = {name: rec.get("summary", {}) for name, rec in records.items()}
    lines = [f"# alignrec run `{run_dir.name}`", "", f"Config: `{source}`", "", "## Stages", ""]
    lines += _table(["stage", "this run", "wall time of its last run (s)"],
                    [[r.name, r.status, f"{records[r.name].get('seconds', 0.0):.1f}"] for r in results])

    if data := summaries.get("data"):
        lines += ["", "## Dataset", ""]
        lines += _table(["users", "items", "interactions", "drops"],
                        [[data.get("users"), data.get("items"), data.get("interactions"),
                          ", ".join(f"{k}={v}" for k, v in (data.get("drops") or {}).items()) or "none"]])
        if split := data.get("split"):
            lines += ["", "Split: " + ", ".join(f"{k} {_fmt(v)}" for k, v in split.items())]

    if tok := summaries.get("tokenizer"):
        lines += ["", "## Item tokenizer", ""]
        lines += _table(["items", "codebook sizes", "usage % per level", "perplexity per level",
                         "collisions before", "after", "items moved", "relative reconstruction error"],
                        [[tok.get("num_items"), tok.get("codebook_sizes"), tok.get("usage_percent"),
                          tok.get("perplexity"), tok.get("collisions_before"), tok.get("collisions_after"),
                          tok.get("items_moved"), tok.get("recon_relative")]])
        lines += [""] + _link(run_dir, run_dir / "tokenizer" / "item_tokenizer" / "code_usage.png", "code usage")

    if train := summaries.get("train"):
        lines += ["", "## Training", ""]
        lines += _table(["launcher", "wall time (s)", "first loss", "last loss", "last held-out seqrec loss"],
                        [[train.get("launcher"), f"{train.get('seconds', 0.0):.1f}", train.get("first_loss"),
                          train.get("last_loss"), train.get("last_eval_loss")]])
        lines += [""] + _link(run_dir, run_dir / "train" / "model" / "loss_curve.png", "loss curve")

    lines += _preference_lines(run_dir, summaries)

    metrics_md = run_dir / "evaluate" / "metrics.md"
    if metrics_md.is_file():
        body = metrics_md.read_text().split("\n", 1)[1]  # drop its own title
        lines += ["", "## Quality (full ranking over the whole catalogue)", body.replace("\n## ", "\n### ")]

    lines += ["", "## Throughput", ""]
    rows = []
    for name, rep in (summaries.get("evaluate") or {}).items():
        timing = rep.get("timing") or {}
        rows.append([f"evaluate: {name}", _fmt(timing.get("users_per_second"), 1), _fmt(timing.get("seconds"), 1)])
    if cache := summaries.get("cache"):
        rows.append(["cache build (beam search, all users)", _fmt(cache.get("users_per_second"), 1),
                     _fmt(cache.get("build_seconds"), 1)])
    lines += _table(["what", "users / s", "seconds"], rows)
    if cache:
        lines += ["", f"Cache lookups: mean {_fmt(cache.get('lookup_mean_us'), 1)} µs per user (in-process)."]

    lines += ["", "## Artefacts", ""]
    artefacts = [("split dataset", run_dir / "data" / "split"), ("item tokenizer", run_dir / "tokenizer" / "item_tokenizer"),
                 ("task datasets", run_dir / "tasks" / "dataset"), ("trained model", run_dir / "train" / "model"),
                 ("preference pairs", run_dir / "preference" / "pairs"), ("DPO model", run_dir / "preference" / "model"),
                 ("metrics", run_dir / "evaluate" / "metrics.json"), ("cache shards", run_dir / "cache" / "build"),
                 ("serving store", run_dir / "cache" / "store"), ("vocabulary export", run_dir / "export" / "vocab")]
    lines += [f"- {what}: `{path}`" for what, path in artefacts
              if path.exists() and path.relative_to(run_dir).parts[0] not in off]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    (run_dir / "report.json").write_text(json.dumps(summaries, indent=2, default=str))
    return path
