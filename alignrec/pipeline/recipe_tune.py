"""Tune our recipe on a user's data, valid targets only: ``alignrec recipe-tune``'s library.

The recipe was chosen on one dataset and does not transfer as it is (a dense catalogue wants other levers than a
sparse one), so a user re-tunes it on their own data. The search is the SASRec bar's (``coordinate_search``: one
axis at a time from the config's own values, then seeded random points, every trial appended to ``trials.jsonl``
so a rerun resumes). A point is a set of pipeline overrides; its trial is a pipeline run of the config + the
overrides with ``evaluate.part: valid`` forced and the bar rows off (they cost minutes and do not change our
score), in ``<out>/runs/<name>__<point digest>`` after hard-linking the base run's finished stages
(``seed_from_base``; once trials exist, the best one's, so an evaluate-only point reuses its training): a point
that only changes ``train.*`` re-runs train and evaluate only. The score is the alignrec row's valid NDCG@10 from
``evaluate/metrics.json`` (NDCG at the largest K when the config's ``ks`` stop below 10); test is never read
(checked on every trial).

An axis is ``section.key: [values]``, or a tied axis ``label: [{section.key: value, ...}, ...]`` whose keys move
together (width: hidden size with MLP width).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignrec.pipeline.config import STAGE_NAMES, RunConfig
from recdata.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["FORCED", "RECIPE_SPACE", "check_space", "point_overrides", "run_trial", "score_cutoff", "seed_source",
           "start_point", "trials_markdown", "tune_recipe"]

# The levers of the shipped scratch recipe, in search order: width first (capacity, the main lever of our
# ablations), then its regulariser, the item head's loss weight and the schedule's length (the weighted head is
# best early, so epochs interact with it). A tied axis moves hidden size and MLP width together.
RECIPE_SPACE: dict[str, list[Any]] = {
    "width": [{"train.scratch_hidden": 128, "train.scratch_intermediate": 512},
              {"train.scratch_hidden": 256, "train.scratch_intermediate": 1024}],
    "train.scratch_dropout": [0.1, 0.2, 0.3],
    "train.item_head_weight": [2.0, 4.0, 8.0],
    "train.num_train_epochs": [4, 8, 16],
}

# Every trial: valid targets only, and none of the bar rows (they train SASRecs and leave our row unchanged).
FORCED: dict[str, Any] = {"evaluate.part": "valid", "evaluate.sasrec_tuned": None, "evaluate.sasrec_content": None,
                          "evaluate.sasrec_bce_baseline": False}


def _check_key(key: Any, where: str) -> str:
    section, dot, name = str(key).partition(".")
    if not isinstance(key, str) or not dot or section not in STAGE_NAMES or not name:
        raise ConfigError(f"{where}: {key!r} is not section.key (sections: {', '.join(STAGE_NAMES)})")
    if key in FORCED:
        raise ConfigError(f"{where}: {key} is set by recipe-tune itself (trials score valid targets, bar rows off)")
    return key


def check_space(space: Any, source: str) -> dict[str, list[Any]]:
    """The axes of a space mapping; a malformed axis is one ConfigError naming ``source`` and the axis."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{source}: a search space is a non-empty mapping of section.key: [values] "
                          "(or label: [{section.key: value, ...}, ...] for keys tied together)")
    seen: set[str] = set()
    for axis, values in space.items():
        where = f"{source}: axis {axis!r}"
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: give a non-empty list of values, got {values!r}")
        tied = [isinstance(v, Mapping) for v in values]
        if any(tied) and not all(tied):
            raise ConfigError(f"{where}: mixes mappings (tied keys) and plain values; use one kind per axis")
        if all(tied):
            keys = {_check_key(k, where) for k in values[0]}
            if not keys or any(set(v) != keys for v in values):
                raise ConfigError(f"{where}: every value of a tied axis sets the same keys, got {values!r}")
        else:
            keys = {_check_key(axis, f"{source}: axis")}
        if any(v is None or (isinstance(v, Mapping) and None in v.values()) for v in values):
            raise ConfigError(f"{where}: a value is null; give every value explicitly")
        if keys & seen:
            raise ConfigError(f"{where}: key(s) {sorted(keys & seen)} are in another axis too")
        seen |= keys
    return {str(axis): list(values) for axis, values in space.items()}


def point_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of a point (tied axes flattened; ``None``: the config's own default)."""
    out: dict[str, Any] = {}
    for axis, value in params.items():
        out.update(dict(value) if isinstance(value, Mapping) else {axis: value})
    return out


def _section_value(run_cfg: RunConfig, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return run_cfg.sections.get(section, {}).get(key)


def start_point(run_cfg: RunConfig, space: Mapping[str, list[Any]]) -> dict[str, Any]:
    """The config's own value of every axis, as the grid writes it when it is on the grid (``4`` and ``4.0`` are one
    point); a key the config leaves unset starts at ``None`` (the stage's default)."""
    start: dict[str, Any] = {}
    for axis, values in space.items():
        if isinstance(values[0], Mapping):
            own: Any = {k: _section_value(run_cfg, k) for k in values[0]}
        else:
            own = _section_value(run_cfg, axis)
        start[axis] = next((v for v in values if v == own), own)
    return start


def score_cutoff(ks: list[int]) -> int:
    """The K of the score: 10, or the largest K when the config's cut-offs stop below 10 (as bench_quality)."""
    return 10 if 10 in ks else max(ks)


def trial_name(run_cfg: RunConfig, params: Mapping[str, Any]) -> str:
    from alignrec.recommenders.tuning import point_key
    from recdata.io import sha256_json

    return f"{run_cfg.name}__{sha256_json(point_key(params))[:10]}"


def trial_config(run_cfg: RunConfig, params: Mapping[str, Any], runs_dir: Path) -> RunConfig:
    from alignrec.pipeline.variants import apply_overrides

    return apply_overrides(run_cfg, {**point_overrides(params), **FORCED},
                           name=trial_name(run_cfg, params), runs_dir=runs_dir)


def seed_source(base_dir: Path, trials_file: Path, runs_dir: Path) -> Path:
    """The run a new trial starts from: the best finished trial (the coordinate search moves from it, so a point
    that changes only evaluate keys reuses its training), else the base run."""
    from alignrec.recommenders.tuning import read_trials

    trials = [t for t in read_trials(trials_file) if (runs_dir / str(t.get("run"))).is_dir()]
    return runs_dir / max(trials, key=lambda t: (t["score"], -t["index"]))["run"] if trials else base_dir


def run_trial(run_cfg: RunConfig, source_dir: Path, params: Mapping[str, Any], runs_dir: Path) -> dict[str, Any]:
    """One point: its pipeline run up to evaluate, scored on valid. The finished stages of ``source_dir`` are
    hard-linked in first, so only the stages whose key the point changes run (train and evaluate for a train key)."""
    from alignrec.pipeline import run_pipeline
    from alignrec.pipeline.variants import seed_from_base

    cfg = trial_config(run_cfg, params, runs_dir)
    started = time.time()
    seed_from_base(source_dir, cfg.run_dir)
    run_pipeline(cfg, until="evaluate")
    metrics = json.loads((cfg.run_dir / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    part = metrics["config"]["EvaluateConfig"]["part"]
    if part != "valid":  # the forced override is the whole guarantee: never let a test score into the search
        raise RuntimeError(f"trial {cfg.run_dir} scored the {part!r} targets; recipe-tune reads valid only")
    ours, k = metrics["recommenders"]["alignrec"], score_cutoff(metrics["config"]["EvaluateConfig"]["ks"])
    stages = {s: json.loads((cfg.run_dir / s / "stage.json").read_text(encoding="utf-8")) for s in ("train", "evaluate")}
    ran = float(stages["train"]["started"]) >= started  # False: reused from the run this trial started from
    return {"score": float(ours["overall"][f"ndcg@{k}"]), "metric": f"ndcg@{k}",
            f"recall@{k}": float(ours["overall"][f"recall@{k}"]), "valid_users": int(ours["n_examples"]),
            "run": cfg.run_dir.name, "train_ran": ran,
            "train_seconds": round(float(stages["train"]["seconds"]), 1) if ran else 0.0,
            "evaluate_seconds": round(float(stages["evaluate"]["seconds"]), 1), "finished_at": time.time()}


def _cell(value: Any) -> str:
    if isinstance(value, Mapping):
        return "/".join(_cell(v) for v in value.values())
    return "default" if value is None else str(value)


def trials_markdown(search: dict[str, Any], space: Mapping[str, list[Any]], source: str, budget: int) -> str:
    """The grid with its valid scores, in trial order; the chosen row marked."""
    axes, k = list(space), search["best"]["metric"].split("@")[1]
    labels = [a if not isinstance(space[a][0], Mapping) else f"{a} ({'/'.join(space[a][0])})" for a in axes]
    lines = [f"# Recipe tuning: {source} ({len(search['trials'])} of {budget} trials, valid targets only)", "",
             "Each trial is the config + its overrides with `evaluate.part: valid` (test is never read) and the bar "
             f"rows off; `default` = the key the config leaves unset. Chosen: the best valid NDCG@{k}.", "",
             "| # | " + " | ".join(labels) + f" | valid NDCG@{k} | valid Recall@{k} | train s | run |",
             "|" + "---|" * (len(axes) + 5)]
    for t in search["trials"]:
        mark = " (chosen)" if t["key"] == search["best"]["key"] else ""
        lines.append(f"| {t['index'] + 1} | " + " | ".join(_cell(t["params"].get(a)) for a in axes)
                     + f" | {t['score']:.4f}{mark} | {t[f'recall@{k}']:.4f} | {t['train_seconds'] if t.get('train_ran') else 'reused'} | "
                     f"{t.get('run', '-')} |")
    return "\n".join(lines) + "\n"


def _claim_files(out: Path, names: list[str]) -> None:
    """Files of ``out`` that recipe-tune writes: refuse one it did not write (a user's file of the same name)."""
    from recdata.errors import OutputFolderError
    from recdata.outputs import read_marker, update_marker

    ours = set(read_marker(out).get("files") or ())
    foreign = sorted(n for n in names if (out / n).exists() and n not in ours)
    if foreign:
        raise OutputFolderError(f"{out} holds {foreign}, which alignrec recipe-tune did not write; move them or "
                                "choose another --out_dir")
    update_marker(out, files=sorted(ours | set(names)))


def _identity(run_cfg: RunConfig, space: Mapping[str, list[Any]], start: Mapping[str, Any]) -> dict[str, Any]:
    """What makes finished trials reusable: the data (its stage key: config + file content) and every key of the
    trials' config that the space does not set (so any budget, start or axis values may change on a rerun)."""
    from alignrec.pipeline.variants import apply_overrides
    from recdata.io import sha256_json

    sections = apply_overrides(run_cfg, FORCED).sections
    for dotted in point_overrides(start):
        section, _, key = dotted.partition(".")
        sections.get(section, {}).pop(key, None)
    data = json.loads((run_cfg.run_dir / "data" / "stage.json").read_text(encoding="utf-8"))
    return {"data": data["key"], "config": sha256_json(sections), "axes": sorted(point_overrides(start))}


def _validate_points(run_cfg: RunConfig, space: Mapping[str, list[Any]], start: Mapping[str, Any]) -> None:
    """Every axis value on top of the start point passes the pipeline's own section checks, before any training."""
    from alignrec.pipeline.stages import validate_sections
    from alignrec.pipeline.variants import apply_overrides

    for axis, values in space.items():
        for value in values:
            cfg = apply_overrides(run_cfg, {**point_overrides({**start, axis: value}), **FORCED})
            validate_sections(cfg.sections, f"{run_cfg.source} with {axis}={_cell(value)}")


def _start_from(base_run: Path, run_dir: Path) -> None:
    """Hard-link a finished run's stages into the base run where it has none (``seed_from_base``): a run of the
    same config under another name (``bench_quality.py --seeds`` writes ``<name>__seed42``) then saves the stages
    upstream of train (minutes to an hour on a large catalogue) and, when its train key is the start point's, the
    first trial's training. Stages whose key differs re-run as ever."""
    from alignrec.pipeline.runner import read_stage_record
    from alignrec.pipeline.variants import seed_from_base

    if not any((read_stage_record(base_run / stage) or {}).get("status") == "complete" for stage in STAGE_NAMES):
        raise ConfigError(f"--base_run {base_run} holds no finished stage of an alignrec run; pass a run folder "
                          "(runs/<name>) or leave it out")
    copied = seed_from_base(base_run, run_dir)
    logger.info("base run %s: stages %s hard-linked from %s", run_dir, copied or "none (it has its own)", base_run)


def tune_recipe(config_path: str | Path, budget: int, space_file: str = "", out_dir: str = "", seed: int = 42,
                overwrite: bool = False, base_run: str = "") -> dict[str, Any]:
    """Run the search; write trials.jsonl, trials.md, tuned.yaml (the chosen overrides), ``<config>.tuned.yaml``
    (the config with them) and summary.json into the output folder; return the summary. ``base_run``: a finished
    run of the config whose stages the base run starts from (``_start_from``)."""
    import yaml

    from alignrec.pipeline import load_run_config, run_pipeline
    from alignrec.pipeline.tuned_config import tuned_config_text
    from alignrec.recommenders.tuning import check_resumable, coordinate_search, point_key
    from recdata.config import load_yaml
    from recdata.io import atomic_write_json, atomic_write_text
    from recdata.outputs import claim_output_dir

    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"--run_config {path} does not exist; pass a pipeline YAML (e.g. configs/*.yaml)")
    if space_file and not Path(space_file).is_file():
        raise ConfigError(f"--space {space_file} does not exist; pass a YAML of axes (section.key: [values])")
    run_cfg = load_run_config(path)
    space = check_space(load_yaml(space_file), space_file) if space_file else RECIPE_SPACE
    if not space_file and run_cfg.sections.get("train", {}).get("model_init") != "scratch":
        raise ConfigError(f"{path}: the default space tunes the scratch recipe (train.model_init: scratch); this "
                          "config trains another model: pass --space FILE with its own levers")
    start = start_point(run_cfg, space)
    _validate_points(run_cfg, space, start)
    data = run_cfg.sections.get("data", {})
    out = claim_output_dir(Path(out_dir) if out_dir else run_cfg.runs_dir / f"{run_cfg.name}__recipe_tune",
                           "recipe-tune", inputs=[data.get("path"), data.get("item_path"), run_cfg.run_dir],
                           overwrite=overwrite)
    tuned_name = f"{path.name.removesuffix('.yaml').removesuffix('.yml')}.tuned.yaml"
    _claim_files(out, ["tune_config.json", "trials.jsonl", "trials.md", "tuned.yaml", tuned_name, "summary.json",
                       "runs"])
    if base_run:
        _start_from(Path(base_run), run_cfg.run_dir)
    run_pipeline(run_cfg, until="tasks")  # the base run: every stage upstream of train, once, for every trial
    identity = _identity(run_cfg, space, start)
    check_resumable(out / "tune_config.json", identity, under="identity")
    atomic_write_json(out / "tune_config.json", {"run_config": str(path), "budget": budget, "seed": seed,
                                                 "space": space, "start": start, "forced": FORCED,
                                                 "identity": identity})
    trials_file, runs = out / "trials.jsonl", out / "runs"
    search = coordinate_search(space, start, lambda params: run_trial(
        run_cfg, seed_source(run_cfg.run_dir, trials_file, runs), params, runs), budget, trials_file, seed=seed)
    best = search["best"]
    own = next((t for t in search["trials"] if t["key"] == point_key(start)), None)
    chosen = {k: v for k, v in point_overrides(best["params"]).items() if v is not None}
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in chosen.items():
        section, _, key = dotted.partition(".")
        nested.setdefault(section, {})[key] = value
    scores = f"valid {best['metric'].replace('ndcg', 'NDCG')} {best['score']:.4f}" + (
        f", the config's own values {own['score']:.4f}" if own else "")
    summary_line = (f"chosen on the {best.get('valid_users', '?')} valid targets ({scores}; {len(search['trials'])} "
                    f"trials, seed {seed}); test was never read")
    atomic_write_text(out / "tuned.yaml", f"# alignrec recipe-tune on {path}: {summary_line}.\n# Paste into the run "
                      f"config, or run {tuned_name} (the whole config with these values).\n"
                      + yaml.safe_dump(nested, sort_keys=False))
    header = (f"# Generated by `alignrec recipe-tune` from {path}: that config with the values {summary_line}:\n"
              f"#   {', '.join(f'{k}={v}' for k, v in chosen.items())}\n# and name {run_cfg.name}_tuned (its own "
              f"run folder).   alignrec run --config {out / tuned_name}\n")
    text, kept = tuned_config_text(path.read_text(encoding="utf-8"), {**chosen, "name": f"{run_cfg.name}_tuned"},
                                   header)
    atomic_write_text(out / tuned_name, text)
    atomic_write_text(out / "trials.md", trials_markdown(search, space, str(path), budget))
    summary = {"best": best, "own": own, "trials": len(search["trials"]), "overrides": nested,
               "tuned_config": str(out / tuned_name), "comments_kept": kept}
    atomic_write_json(out / "summary.json", summary)
    logger.info("recipe tune: %s -> %s", summary_line, out / tuned_name)
    return summary
