"""``alignrec run --config CONFIG.yaml``: the whole pipeline, each stage skipped when nothing it reads changed.

    alignrec run --config configs/demo_ml100k.yaml                       # run / resume
    alignrec run --config C.yaml --set tokenizer.num_levels=3 --set name=l3   # override YAML values
    alignrec run --config C.yaml --dry_run                               # what would run, and why
    alignrec run --config C.yaml --status                                # stages done / stale / missing
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="Run the whole pipeline (data -> ... -> cache + vocab export).",
                              add_help=False)
    p.set_defaults(handler=_run)


def _parser() -> argparse.ArgumentParser:
    from alignrec.pipeline.config import STAGE_NAMES
    from recdata.errors import ConfigError

    p = argparse.ArgumentParser(prog="alignrec run", description=__doc__.splitlines()[0])

    def error(message: str) -> None:
        raise ConfigError(f"{message} (see --help)")

    p.error = error  # type: ignore[method-assign]
    p.add_argument("--config", required=True, metavar="FILE.yaml", help="run config YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set tokenizer.num_levels=3 --set name=l3; "
                        "values parse as YAML (3, true, [1, 2])")
    p.add_argument("--from", dest="start", choices=STAGE_NAMES, help="first stage to run (earlier ones must be done)")
    p.add_argument("--until", choices=STAGE_NAMES, help="last stage to run")
    p.add_argument("--force", action="store_true", help="re-run the selected stages even when unchanged")
    p.add_argument("--dry_run", action="store_true",
                   help="validate the config and print which stages would run and why; run nothing")
    p.add_argument("--status", action="store_true", help="print every stage as done / stale / missing / off, and why")
    p.add_argument("--name", help="run name (default: `name` in the config)")
    p.add_argument("--runs_dir", help="folder of runs (default: `runs_dir` in the config, else runs/)")
    return p


def format_plan(plans, start: str | None = None, until: str | None = None, force: bool = False,
                dry_run: bool = False) -> str:
    """One line per stage: state, what a run would do (dry run), and the reason."""
    from alignrec.pipeline import select_range

    first, last = select_range([p.name for p in plans], start, until)
    width = max(len(p.name) for p in plans)
    lines = []
    for index, plan in enumerate(plans):
        if not dry_run or plan.state == "off":
            action = plan.state
        elif index < first or index > last:
            action = "not selected" if plan.state == "done" or index > last else "BLOCKS (not done)"
        elif plan.state == "done":
            action = "would run (--force)" if force else "skip"
        else:
            action = "would run"
        lines.append(f"{plan.name:<{width}}  {action:<19} {plan.reason}")
    return "\n".join(lines)


def check_run_devices(run_cfg, start: str | None = None, until: str | None = None) -> None:
    """Every device named in the sections of the stages this run may run exists on this machine: one line now,
    not a torch traceback hours later. Not part of ``--dry_run`` (a GPU config may be planned on a laptop)."""
    from alignrec.pipeline import select_range
    from alignrec.pipeline.config import STAGE_NAMES
    from recdata.devices import check_section_devices

    first, last = select_range(list(STAGE_NAMES), start, until)
    for stage in STAGE_NAMES[first:last + 1]:
        check_section_devices(run_cfg.sections.get(stage) or {}, stage, run_cfg.source)


def _run(args, argv: list[str]) -> int:
    from alignrec.pipeline import pipeline_plan, run_pipeline
    from alignrec.pipeline.config import load_run_config
    from recdata.config import reject_unknown_flags

    parser = _parser()
    reject_unknown_flags(parser, argv)
    opts = parser.parse_args(argv)
    if opts.dry_run or opts.status:
        run_cfg, plans = pipeline_plan(opts.config, name=opts.name, runs_dir=opts.runs_dir, overrides=opts.overrides)
        sys.stdout.write(f"run {run_cfg.run_dir} ({run_cfg.source})\n")
        sys.stdout.write(format_plan(plans, opts.start, opts.until, opts.force, dry_run=opts.dry_run) + "\n")
        return 0
    run_cfg = load_run_config(opts.config, name=opts.name, runs_dir=opts.runs_dir, overrides=opts.overrides)
    check_run_devices(run_cfg, opts.start, opts.until)
    report = run_pipeline(run_cfg, start=opts.start, until=opts.until, force=opts.force)
    print(f"report: {report}")
    return 0
