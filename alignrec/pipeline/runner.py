"""Run pipeline stages in order, skipping those whose inputs and config are unchanged.

Each stage writes into ``runs/<name>/<stage>/`` and finishes by writing ``stage.json`` (its key, timing and a
summary) atomically. The key hashes the stage's resolved config, the keys of the stages it reads from and a
per-stage code version, so a changed tokenizer config re-runs the tokenizer and everything downstream of it
but nothing upstream. A stage whose key changed starts from an empty folder; one interrupted with the same
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

from recdata.io import atomic_write_json, sha256_json

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
    # What is hashed besides the section itself (e.g. the size and mtime of source files).
    extra_key: Callable[[dict[str, Any], Any], dict[str, Any]] = field(default=lambda section, run_config: {})
    # Optional stages: whether this section turns the stage on (off: status "off", not part of downstream keys).
    enabled: Callable[[dict[str, Any], Any], bool] = field(default=lambda section, run_config: True)


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "skipped" | "not selected" | "off"
    seconds: float
    summary: dict[str, Any]


def stage_key(stage: Stage, resolved: dict[str, Any], upstream_keys: dict[str, str]) -> str:
    return sha256_json({"stage": stage.name, "version": stage.version, "config": resolved, "upstream": upstream_keys})


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
    for label, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise ValueError(f"{label} {value!r} is not a stage; stages are: {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1
    if first > last:
        raise ValueError(f"--from {start} comes after --until {until}; stage order is {' -> '.join(names)}")

    run_dir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str | None] = {}
    stage_dirs = {s.name: run_dir / s.name for s in stages}
    results: list[StageResult] = []
    for index, stage in enumerate(stages):
        if index > last:
            break
        section = dict(sections.get(stage.name, {}))
        if not stage.enabled(section, run_config):
            keys[stage.name] = None
            results.append(StageResult(stage.name, "off", 0.0, {}))
            continue
        resolved = {"section": section, **stage.extra_key(section, run_config)}
        key = stage_key(stage, resolved, {d: keys[d] for d in stage.depends_on if keys.get(d) is not None})
        keys[stage.name] = key
        out_dir = stage_dirs[stage.name]
        record = read_stage_record(out_dir)
        done = record is not None and record.get("key") == key and record.get("status") == "complete"
        if index < first:
            if not done:
                raise RuntimeError(
                    f"stage {stage.name!r} has no complete output for the current config in {out_dir}; "
                    f"run without --from (or with --from {stage.name}) first"
                )
            results.append(StageResult(stage.name, "not selected", 0.0, record.get("summary", {})))
            continue
        if done and not force:
            logger.info("stage %-9s skipped (unchanged, key %s)", stage.name, key[:12])
            results.append(StageResult(stage.name, "skipped", 0.0, record.get("summary", {})))
            continue
        if out_dir.exists() and (force or record is None or record.get("key") != key):
            partial = out_dir / ".partial_key"
            same_key_partial = partial.is_file() and partial.read_text().strip() == key and not force
            if not same_key_partial:
                shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ".partial_key").write_text(key + "\n")
        logger.info("stage %-9s running -> %s", stage.name, out_dir)
        started = time.time()
        summary = stage.run(StageContext(run_dir, out_dir, section, run_config, stage_dirs))
        seconds = time.time() - started
        atomic_write_json(
            out_dir / STAGE_FILE,
            {"key": key, "status": "complete", "stage": stage.name, "config": resolved, "upstream": list(stage.depends_on),
             "started": started, "seconds": seconds, "summary": summary},
        )
        logger.info("stage %-9s done in %.1f s", stage.name, seconds)
        results.append(StageResult(stage.name, "ran", seconds, summary))
    return results
