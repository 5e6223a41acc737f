"""``alignrec run``: every stage in order, each skipped when its inputs and config are unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

from alignrec.pipeline.config import RunConfig, load_run_config
from alignrec.pipeline.runner import Stage, StageResult, run_stages

logger = logging.getLogger(__name__)

__all__ = ["RunConfig", "Stage", "StageResult", "load_run_config", "run_pipeline", "run_stages"]


def run_pipeline(
    config: str | Path | RunConfig,
    start: str | None = None,
    until: str | None = None,
    force: bool = False,
    name: str | None = None,
    runs_dir: str | None = None,
) -> Path:
    """Run the stages of ``config`` and write ``runs/<name>/report.md``; returns the report path."""
    from alignrec.pipeline.report import write_report
    from alignrec.pipeline.stages import STAGES, validate_sections

    run_cfg = config if isinstance(config, RunConfig) else load_run_config(config, name=name, runs_dir=runs_dir)
    validate_sections(run_cfg.sections, run_cfg.source)
    results = run_stages(STAGES, run_cfg.run_dir, run_cfg.sections, run_cfg, start=start, until=until, force=force)
    for r in results:
        logger.info("%-10s %-12s %7.1f s", r.name, r.status, r.seconds)
    report = write_report(run_cfg.run_dir, results, run_cfg.source)
    logger.info("report: %s", report)
    return report
