"""Run variants of one config: ``section.key=value`` overrides and reuse of a base run's finished stages.

An ablation or a seed sweep changes one or two keys; every stage upstream of them is the same. Copying the base
run's finished stage folders into the variant's folder (hard links: no extra disk) lets the runner's own key
check skip exactly the unchanged stages and re-run the rest, so no stage logic is duplicated here.

``apply_overrides`` is defined in ``alignrec.pipeline.config`` (loading a config applies ``--set`` with it) and
re-exported here.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from alignrec.pipeline.config import STAGE_NAMES, apply_overrides
from alignrec.pipeline.runner import read_stage_record

logger = logging.getLogger(__name__)

__all__ = ["apply_overrides", "seed_from_base"]


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
