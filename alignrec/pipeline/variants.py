"""Run variants of one config: ``section.key=value`` overrides and reuse of a base run's finished stages.

An ablation or a seed sweep changes one or two keys; every stage upstream of them is the same. Copying the base
run's finished stage folders into the variant's folder (hard links: no extra disk) lets the runner's own key
check skip exactly the unchanged stages and re-run the rest, so no stage logic is duplicated here.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignrec.pipeline.config import STAGE_NAMES, RunConfig
from alignrec.pipeline.runner import read_stage_record
from recdata.errors import ConfigError

logger = logging.getLogger(__name__)


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


def seed_from_base(base_run_dir: Path, variant_run_dir: Path) -> list[str]:
    """Hard-link the base run's complete stage folders into the variant run where it has none yet.

    Returns the stages copied. The runner then skips those whose key is unchanged and replaces the others
    (it only ever removes folders inside the variant run, which are copies).
    """
    copied = []
    for stage in STAGE_NAMES:
        src, dst = base_run_dir / stage, variant_run_dir / stage
        record = read_stage_record(src)
        if dst.exists() or record is None or record.get("status") != "complete":
            continue
        variant_run_dir.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(src, dst, copy_function=os.link)
        except OSError:  # another filesystem: plain copies
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        copied.append(stage)
    return copied
