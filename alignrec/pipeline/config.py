"""The ``alignrec run`` config: a name, a runs folder, and one section per stage.

Each section holds that stage's own config keys (the same keys its subcommand takes: ``alignrec data
prepare``, ``tokenize``, ``tasks build``, ``trainer/sft.py``, ``evaluate``, ``cache build``); the pipeline fills
the paths that connect stages (``split_dir``, ``output_dir``, ...). ``${VAR}`` and ``~`` in strings expand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recdata.config import load_yaml

STAGE_NAMES = ("data", "knowledge", "embeddings", "tokenizer", "tasks", "train", "evaluate", "cache", "export")


@dataclass
class RunConfig:
    name: str
    runs_dir: Path
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<dict>"

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return os.path.expanduser(os.path.expandvars(value))
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def load_run_config(path: str | os.PathLike, name: str | None = None, runs_dir: str | None = None) -> RunConfig:
    os.environ.setdefault("ALIGNREC_HOME", str(Path.home() / ".cache" / "alignrec"))
    data = _expand(load_yaml(path))
    return run_config_from_dict(data, source=str(path), name=name, runs_dir=runs_dir)


def run_config_from_dict(
    data: dict[str, Any], source: str = "<dict>", name: str | None = None, runs_dir: str | None = None
) -> RunConfig:
    allowed = {"name", "runs_dir", *STAGE_NAMES}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}")
    for stage in STAGE_NAMES:
        section = data.get(stage) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{source}: section {stage!r} must be a mapping of config keys, got {type(section).__name__}")
    run_name = name or data.get("name")
    if not run_name:
        raise ValueError(f"{source}: set `name:` (the run folder under runs_dir) or pass --name")
    return RunConfig(
        name=str(run_name),
        runs_dir=Path(runs_dir or data.get("runs_dir") or "runs"),
        sections={stage: dict(data.get(stage) or {}) for stage in STAGE_NAMES},
        source=source,
    )
