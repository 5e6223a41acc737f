"""Run pipeline stages in order, skipping those whose inputs and config are unchanged.

Each stage writes into ``runs/<name>/<stage>/`` and finishes by writing ``stage.json`` (its key, timing and a
summary) atomically. The key hashes the stage's resolved config, the *content* of every file or folder it reads
from outside the run (``Stage.inputs``: data sources, user vectors, query files, model folders, the DeepSpeed
JSON; see ``recdata.fingerprint``), the keys of the stages it reads from and a per-stage code version, so a
changed tokenizer config or an edited ``file_path`` re-runs that stage and everything downstream of it but
nothing upstream. ``plan_stages`` computes the same keys without running anything and says why each stage
would run (``alignrec run --dry_run`` / ``--status``). A stage whose key changed starts from an empty folder; one interrupted with the same
key keeps its folder, so stages that checkpoint (training, cache build) resume.

An optional stage (``enabled`` false for its section, e.g. ``preference`` without ``enabled: true``) is reported
as ``off``: it does not run, its folder is left alone, and it drops out of the keys of the stages that read it, so
turning it off gives every later stage the key it had before the optional stage existed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recdata.errors import ConfigError, OutputFolderError, UserError
from recdata.fingerprint import content_fingerprint
from recdata.io import atomic_write_json, sha256_json
from recdata.outputs import MARKER, claim_output_dir, is_owned, read_marker, update_marker

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


@dataclass
class StageContext:
    """What a stage function sees: its own folder and config, and the folders of earlier stages."""

    run_dir: Path
    out_dir: Path
    config: dict[str, Any]
    run_config: Any
    stage_dirs: dict[str, Path]

    def upstream(self, stage: str) -> Path:
        return self.stage_dirs[stage]


@dataclass
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, Any]]
    depends_on: Sequence[str] = ()
    version: int = 1
    # What is hashed besides the section itself (values only; files go in ``inputs``).
    extra_key: Callable[[dict[str, Any], Any], dict[str, Any]] = field(default=lambda section, run_config: {})
    # Files / folders outside the run that the stage reads, {label: path}: their content enters the key.
    inputs: Callable[[dict[str, Any], Any], dict[str, str]] = field(default=lambda section, run_config: {})
    # Optional stages: whether this section turns the stage on (off: state "off", not part of downstream keys).
    enabled: Callable[[dict[str, Any], Any], bool] = field(default=lambda section, run_config: True)


@dataclass
class StagePlan:
    """What ``run_stages`` would do with one stage: ``state`` done | stale | missing | off, and why."""

    name: str
    key: str
    state: str
    reason: str
    resolved: dict[str, Any]
    input_paths: dict[str, str]
    record: dict[str, Any] | None
    # Keys of the upstream stages that enter this stage's key (stages that are off are left out).
    upstream_keys: dict[str, str] = field(default_factory=dict)


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "skipped" | "not selected" | "off"
    seconds: float
    summary: dict[str, Any]


def stage_key(stage: Stage, resolved: dict[str, Any], upstream_keys: dict[str, str]) -> str:
    return sha256_json({"stage": stage.name, "version": stage.version, "config": resolved, "upstream": upstream_keys})


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the values that differ between two JSON-like trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [prefix or "(value)"]


def _why_stale(stage: Stage, record: dict[str, Any], resolved: dict[str, Any], upstream: dict[str, str],
               input_paths: dict[str, str]) -> str:
    if record.get("version", stage.version) != stage.version:
        return f"code version {record.get('version')} -> {stage.version}"
    changed_up = [d for d, k in upstream.items() if (record.get("upstream_keys") or {}).get(d) not in (None, k)]
    old = record.get("config") or {}
    changed = _diff(old.get("section", {}), resolved.get("section", {}))
    inputs = [f"{label} ({input_paths.get(label) or 'unset'})" for label in
              _diff(old.get("inputs", {}), resolved.get("inputs", {}))]
    extra = _diff({k: v for k, v in old.items() if k not in ("section", "inputs")},
                  {k: v for k, v in resolved.items() if k not in ("section", "inputs")})
    parts = []
    if changed:
        parts.append("config changed: " + ", ".join(changed))
    if inputs:
        parts.append("input content changed: " + ", ".join(inputs))
    if extra:
        parts.append("changed: " + ", ".join(extra))
    if changed_up:
        parts.append("upstream stage changed: " + ", ".join(changed_up))
    return "; ".join(parts) or "key changed"


def plan_stages(stages: Sequence[Stage], run_dir: Path, sections: dict[str, dict[str, Any]],
                run_config: Any) -> list[StagePlan]:
    """Every stage's key and state (done / stale / missing / off) with the reason, without running anything.

    A stage that is off gets no key (``""``) and is left out of the upstream keys of the stages that read it.
    """
    keys: dict[str, str] = {}
    plans = []
    for stage in stages:
        section = dict(sections.get(stage.name, {}))
        if not stage.enabled(section, run_config):
            plans.append(StagePlan(stage.name, "", "off", f"optional, off (set {stage.name}.enabled: true)",
                                   {"section": section}, {}, read_stage_record(run_dir / stage.name)))
            continue
        input_paths = {k: str(v) for k, v in stage.inputs(section, run_config).items() if v}
        resolved: dict[str, Any] = {"section": section, **stage.extra_key(section, run_config)}
        if input_paths:
            resolved["inputs"] = {label: content_fingerprint(path) for label, path in input_paths.items()}
        upstream = {d: keys[d] for d in stage.depends_on if d in keys}
        key = stage_key(stage, resolved, upstream)
        keys[stage.name] = key
        record = read_stage_record(run_dir / stage.name)
        if record is None or record.get("status") != "complete":
            state, reason = "missing", "no complete output" if record is None else "interrupted"
        elif record.get("key") == key:
            state, reason = "done", "unchanged"
        else:
            state, reason = "stale", _why_stale(stage, record, resolved, upstream, input_paths)
        plans.append(StagePlan(stage.name, key, state, reason, resolved, input_paths, record, upstream))
    return plans


def select_range(names: Sequence[str], start: str | None, until: str | None) -> tuple[int, int]:
    """Indices of the first and last selected stage; ConfigError naming a bad --from / --until."""
    for label, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise ConfigError(f"{label} {value!r} is not a stage; stages are: {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1
    if first > last:
        raise ConfigError(f"--from {start} comes after --until {until}; stage order is {' -> '.join(names)}")
    return first, last


_STAGE_OWN = {STAGE_FILE, ".partial_key", MARKER}  # what the runner itself keeps in a stage folder


def clear_stage_dir(out_dir: Path) -> None:
    """Remove what the previous run of a stage wrote into ``out_dir``, never a user's file.

    Ownership is proven by the marker's content (``recdata.outputs.is_owned``), not by a ``stage.json`` that any
    folder may hold: a folder without it is refused, naming it. The marker lists what the stage wrote
    (``stage_files``) and what was there before it ran (``stage_foreign``); those and anything added later are kept.
    A folder from before these lists keeps whatever changed after the stage finished (newer than its
    ``stage.json``, which the runner writes last): a user's file added since is never the stage's output. A crashed
    run's folder (no ``stage.json``) is cleared except its recorded foreign entries."""
    entries = [entry for entry in out_dir.iterdir()]
    if not entries:
        return
    if not is_owned(out_dir):
        raise OutputFolderError(
            f"{out_dir} is not empty and was not written by alignrec (no valid {MARKER}); move its files elsewhere "
            "or choose another run name (--name) / runs_dir")
    marker = read_marker(out_dir)
    ours = marker.get("stage_files")
    foreign = set(marker.get("stage_foreign") or ())
    record = out_dir / STAGE_FILE
    finished = record.stat().st_mtime if not isinstance(ours, list) and record.is_file() else None
    for entry in entries:
        name = entry.name
        if name == MARKER:
            continue
        if isinstance(ours, list):
            remove = name in _STAGE_OWN or name in ours
        else:  # no list: our files are those not newer than the finished stage's record
            remove = name in _STAGE_OWN or (name not in foreign
                                             and (finished is None or entry.lstat().st_mtime <= finished))
        if not remove:
            logger.info("keeping %s (not written by the %s stage)", entry, out_dir.name)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def read_stage_record(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / STAGE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def run_stages(
    stages: Sequence[Stage],
    run_dir: Path,
    sections: dict[str, dict[str, Any]],
    run_config: Any,
    start: str | None = None,
    until: str | None = None,
    force: bool = False,
) -> list[StageResult]:
    """Run ``stages`` from ``start`` to ``until`` (inclusive); stages outside the range must already be done."""
    names = [s.name for s in stages]
    first, last = select_range(names, start, until)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage_dirs = {s.name: run_dir / s.name for s in stages}
    results: list[StageResult] = []
    plans = plan_stages(stages, run_dir, sections, run_config)
    for index, (stage, plan) in enumerate(zip(stages, plans, strict=True)):
        if index > last:
            break
        if plan.state == "off":  # never runs; its folder is left alone
            results.append(StageResult(stage.name, "off", 0.0, {}))
            continue
        section = dict(sections.get(stage.name, {}))
        key, resolved, record = plan.key, plan.resolved, plan.record
        out_dir = stage_dirs[stage.name]
        done = plan.state == "done"
        if index < first:
            if not done:
                raise UserError(
                    f"stage {stage.name!r} has no complete output for the current config in {out_dir}; "
                    f"run without --from (or with --from {stage.name}) first"
                )
            results.append(StageResult(stage.name, "not selected", 0.0, record.get("summary", {})))
            continue
        if not done:
            logger.info("stage %-9s will run: %s", stage.name, plan.reason)
        if done and not force:
            logger.info("stage %-9s skipped (unchanged, key %s)", stage.name, key[:12])
            results.append(StageResult(stage.name, "skipped", 0.0, record.get("summary", {})))
            continue
        if out_dir.exists() and (force or record is None or record.get("key") != key):
            partial = out_dir / ".partial_key"
            same_key_partial = partial.is_file() and partial.read_text().strip() == key and not force
            if not same_key_partial:
                clear_stage_dir(out_dir)
        claim_output_dir(out_dir, f"alignrec run ({stage.name} stage)")  # the stage folder is alignrec's own
        (out_dir / ".partial_key").write_text(key + "\n")
        before = {entry.name for entry in out_dir.iterdir()}  # the user's files (ours were just cleared)
        update_marker(out_dir, stage_foreign=sorted(before - _STAGE_OWN), stage_files=None)
        logger.info("stage %-9s running -> %s", stage.name, out_dir)
        started = time.time()
        summary = stage.run(StageContext(run_dir, out_dir, section, run_config, stage_dirs))
        seconds = time.time() - started
        written = sorted({entry.name for entry in out_dir.iterdir()} - before - _STAGE_OWN)
        update_marker(out_dir, stage_files=written)
        atomic_write_json(
            out_dir / STAGE_FILE,
            {"key": key, "status": "complete", "stage": stage.name, "config": resolved, "upstream": list(stage.depends_on),
             "upstream_keys": plan.upstream_keys,
             "version": stage.version, "input_paths": plan.input_paths,
             "started": started, "seconds": seconds, "summary": summary},
        )
        logger.info("stage %-9s done in %.1f s", stage.name, seconds)
        results.append(StageResult(stage.name, "ran", seconds, summary))
    return results
