"""Config parsing shared by every entry point: dataclasses + ``HfArgumentParser`` + optional YAML.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags. Unknown YAML keys raise, naming
the file and the keys, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; pass an existing YAML file to --config")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def parse_config(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    config_source: str = "<dict>",
) -> tuple[Any, ...]:
    """Parse ``argv`` (plus ``--config YAML`` or an in-memory ``config`` dict) into the given dataclasses."""
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(list(argv) if argv is not None else None)
    values: dict[str, Any] = dict(config or {})
    if known.config:
        values.update(load_yaml(known.config))
        config_source = known.config

    parser = HfArgumentParser(list(dataclass_types))
    parser.epilog = "All flags may also be given in a YAML file with --config FILE.yaml (flags win)."
    dests = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - dests)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {unknown} in {config_source}; valid keys are the flags listed by --help"
        )
    if values:
        for action in parser._actions:
            if action.dest in values:
                action.required = False
        parser.set_defaults(**values)
    return tuple(parser.parse_args_into_dataclasses(args=rest))


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """A JSON-ready dict of resolved configs, keyed by dataclass name, for saving beside artefacts."""
    out: dict[str, Any] = {}
    for cfg in configs:
        if hasattr(cfg, "to_dict"):
            data = cfg.to_dict()
        else:
            data = dataclasses.asdict(cfg)
        out[type(cfg).__name__] = json.loads(json.dumps(data, default=_jsonable))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
