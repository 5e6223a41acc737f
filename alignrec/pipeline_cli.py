"""``alignrec run --config CONFIG.yaml [--from STAGE] [--until STAGE] [--force]``: the whole pipeline."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="Run the whole pipeline (data -> ... -> cache + vocab export).",
                              add_help=False)
    p.set_defaults(handler=_run)


def _parser() -> argparse.ArgumentParser:
    from alignrec.pipeline.config import STAGE_NAMES

    p = argparse.ArgumentParser(prog="alignrec run", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="run config YAML (see configs/)")
    p.add_argument("--from", dest="start", choices=STAGE_NAMES, help="first stage to run (earlier ones must be done)")
    p.add_argument("--until", choices=STAGE_NAMES, help="last stage to run")
    p.add_argument("--force", action="store_true", help="re-run the selected stages even when unchanged")
    p.add_argument("--name", help="run name (default: `name` in the config)")
    p.add_argument("--runs_dir", help="folder of runs (default: `runs_dir` in the config, else runs/)")
    return p


def _run(args, argv: list[str]) -> int:
    from alignrec.pipeline import run_pipeline

    opts = _parser().parse_args(argv)
    report = run_pipeline(opts.config, start=opts.start, until=opts.until, force=opts.force, name=opts.name,
                          runs_dir=opts.runs_dir)
    print(f"report: {report}")
    return 0
