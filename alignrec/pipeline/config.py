"""The ``alignrec run`` config: a name, a runs folder, and one section per stage.

Each section holds that stage's own config keys (the same keys its subcommand takes: ``alignrec data
prepare``, ``tokenize``, ``tasks build``, ``trainer/sft.py``, ``evaluate``, ``cache build``); the pipeline fills
the paths that connect stages (``split_dir``, ``output_dir``, ...). ``${VAR}`` and ``~`` in strings expand.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recdata.config import load_yaml
from recdata.errors import ConfigError

STAGE_NAMES = ("data", "knowledge", "embeddings", "tokenizer", "tasks", "train", "preference", "evaluate", "cache", "export")


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


def parse_set_options(items: list[str], source: str = "--set") -> dict[str, Any]:
    """``["tokenizer.num_levels=3", "name=l3"]`` -> ``{"tokenizer.num_levels": 3, "name": "l3"}``; values parse as
    YAML scalars (``3`` is an int, ``true`` a bool, ``[1, 2]`` a list). Apply with ``apply_overrides``."""
    out: dict[str, Any] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        target = target.strip()
        if not sep or not target:
            raise ConfigError(f"{source} {item!r}: expected section.key=value, e.g. tokenizer.num_levels=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} {item!r}: value {raw!r} is not a YAML scalar ({exc})") from exc
        section, dot, key = target.partition(".")
        if not dot and section not in ("name", "runs_dir"):
            raise ConfigError(f"{source} {item!r}: give section.key=value (sections: {', '.join(STAGE_NAMES)})")
        if dot and (section not in STAGE_NAMES or not key):
            raise ConfigError(f"{source} {item!r}: {section!r} is not a section; sections are {', '.join(STAGE_NAMES)}")
        out[target] = _expand(value)
    return out


def load_run_config(path: str | os.PathLike, name: str | None = None, runs_dir: str | None = None,
                    overrides: list[str] | None = None) -> RunConfig:
    """The run config of ``path``; ``overrides``: ``alignrec run --set`` strings (see ``parse_set_options``)."""
    os.environ.setdefault("ALIGNREC_HOME", str(Path.home() / ".cache" / "alignrec"))
    data = _expand(load_yaml(path))
    sets = parse_set_options(overrides or [])
    run_cfg = run_config_from_dict(data, source=str(path), name=name or sets.pop("name", None),
                                   runs_dir=runs_dir or sets.pop("runs_dir", None))
    return apply_overrides(run_cfg, sets) if sets else run_cfg


def apply_overrides(run_cfg: RunConfig, overrides: Mapping[str, Any], name: str | None = None,
                    runs_dir: str | os.PathLike | None = None) -> RunConfig:
    """A copy of ``run_cfg`` with ``{"section.key": value}`` set (a ``None`` value removes the key)."""
    sections = copy.deepcopy(run_cfg.sections)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in STAGE_NAMES or not key:
            raise ConfigError(f"override {dotted!r} must look like section.key with a section in {list(STAGE_NAMES)}")
        if value is None:
            sections.setdefault(section, {}).pop(key, None)
        else:
            sections.setdefault(section, {})[key] = value
    return RunConfig(name=name or run_cfg.name, runs_dir=Path(runs_dir) if runs_dir else run_cfg.runs_dir,
                     sections=sections, source=f"{run_cfg.source} + {dict(overrides)}")


def run_config_from_dict(
    data: dict[str, Any], source: str = "<dict>", name: str | None = None, runs_dir: str | None = None
) -> RunConfig:
    allowed = {"name", "runs_dir", *STAGE_NAMES}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}")
    for stage in STAGE_NAMES:
        section = data.get(stage) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: section {stage!r} must be a mapping of config keys, got {type(section).__name__}")
    run_name = name or data.get("name")
    if not run_name:
        raise ConfigError(f"{source}: set `name:` (the run folder under runs_dir) or pass --name")
    return RunConfig(
        name=str(run_name),
        runs_dir=Path(runs_dir or data.get("runs_dir") or "runs"),
        sections={stage: dict(data.get(stage) or {}) for stage in STAGE_NAMES},
        source=source,
    )
