"""``alignrec run``: every stage in order, each skipped when its inputs and config are unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

from alignrec.pipeline.config import RunConfig, load_run_config, parse_set_options
from alignrec.pipeline.runner import Stage, StagePlan, StageResult, plan_stages, run_stages, select_range

logger = logging.getLogger(__name__)

__all__ = ["RunConfig", "Stage", "StagePlan", "StageResult", "load_run_config", "parse_set_options", "pipeline_plan",
           "plan_stages", "run_pipeline", "run_stages", "select_range"]


def _claim_run_dir(run_cfg: RunConfig) -> None:
    """``runs/<name>`` is the pipeline's: refuse a user's folder; adopt one written before the marker existed."""
    from recdata.outputs import MARKER, claim_output_dir, is_owned

    run_dir = run_cfg.run_dir
    legacy = run_dir.is_dir() and not is_owned(run_dir) and any(_is_stage_record(p) for p in run_dir.glob("*/stage.json"))
    if legacy:
        (run_dir / MARKER).write_text('{"command": "run"}\n', encoding="utf-8")
    data = run_cfg.sections.get("data", {})
    claim_output_dir(run_dir, "run", inputs=[data.get("path"), data.get("item_path")])


def _is_stage_record(path: Path) -> bool:
    """A ``stage.json`` the runner wrote (its content, not its name: a user's folder may hold a file so named)."""
    import json

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(record, dict) and record.get("stage") == path.parent.name and isinstance(record.get("key"), str)
            and record.get("status") == "complete")


def pipeline_plan(config: str | Path | RunConfig, name: str | None = None, runs_dir: str | None = None,
                  overrides: list[str] | None = None) -> tuple[RunConfig, list[StagePlan]]:
    """The validated run config and every stage's state (done / stale / missing) and reason; runs nothing."""
    from alignrec.pipeline.stages import STAGES, validate_sections

    run_cfg = config if isinstance(config, RunConfig) else load_run_config(config, name=name, runs_dir=runs_dir,
                                                                           overrides=overrides)
    validate_sections(run_cfg.sections, run_cfg.source)
    return run_cfg, plan_stages(STAGES, run_cfg.run_dir, run_cfg.sections, run_cfg)


def run_pipeline(
    config: str | Path | RunConfig,
    start: str | None = None,
    until: str | None = None,
    force: bool = False,
    name: str | None = None,
    runs_dir: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Run the stages of ``config`` and write ``runs/<name>/report.md``; returns the report path.

    ``overrides``: ``section.key=value`` strings (``alignrec run --set``), applied before validation.
    """
    from alignrec.pipeline.report import write_report
    from alignrec.pipeline.stages import STAGES, validate_sections

    run_cfg = config if isinstance(config, RunConfig) else load_run_config(config, name=name, runs_dir=runs_dir,
                                                                           overrides=overrides)
    validate_sections(run_cfg.sections, run_cfg.source)
    from recdata.locks import folder_lock

    with folder_lock(run_cfg.run_dir, "alignrec run"):  # one writer per run folder; released when this process dies
        _claim_run_dir(run_cfg)
        results = run_stages(STAGES, run_cfg.run_dir, run_cfg.sections, run_cfg, start=start, until=until,
                             force=force)
        for r in results:
            logger.info("%-10s %-12s %7.1f s", r.name, r.status, r.seconds)
        report = write_report(run_cfg.run_dir, results, run_cfg.source)
    logger.info("report: %s", report)
    return report
