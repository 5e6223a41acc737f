"""``alignrec data stats PATH`` and ``alignrec data prepare --config data.yaml --output_dir DIR``.

    alignrec data stats ../shared/datasets/amazon18-scientific          # table
    alignrec data stats ~/.cache/alignrec/data/ml-100k --kcore 5 --json  # JSON
    alignrec data stats ../shared/datasets/amazon-food-kitchen --scenario_item_field domain  # + per scenario
    alignrec data prepare --path ../shared/datasets/amazon18-scientific --output_dir runs/data/scientific
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recdata.config import config_to_dict, parse_config
from recdata.io import atomic_write_json
from recdata.outputs import check_not_overlapping, staged_output_dir

logger = logging.getLogger(__name__)


@dataclass
class StatsArgs:
    json: bool = field(default=False, metadata={"help": "Print the statistics as JSON instead of a table."})


@dataclass
class PrepareArgs:
    output_dir: str = field(metadata={"help": "Folder to write the split dataset, stats.json and resolved_config.json."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into an existing non-empty folder that alignrec did not write (its other files are kept)."})


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="Inspect and prepare recommendation datasets.")
    sub = data.add_subparsers(dest="data_command", metavar="{stats,prepare}", required=True)
    p = sub.add_parser("stats", help="Users, items, interactions, density, sequence lengths of PATH.", add_help=False)
    p.set_defaults(handler=_run_stats)
    p = sub.add_parser("prepare", help="Load, clean and split a dataset; save it for the later stages.",
                       add_help=False)
    p.set_defaults(handler=_run_prepare)


def _positional_path(argv: list[str]) -> list[str]:
    """Allow ``stats PATH`` as well as ``stats --path PATH``."""
    if argv and not argv[0].startswith("-"):
        return ["--path", argv[0], *argv[1:]]
    return argv


def format_stats(stats: dict[str, Any]) -> str:
    rows = [
        ("dataset", str(stats["name"])),
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("density", f"{stats['density']:.4%}"),
    ]
    seq = stats.get("sequence_length")
    if seq:
        rows.append(("sequence length", f"mean {seq['mean']:.2f}"))
        rows.append(("  percentiles", "  ".join(f"{k} {seq[k]:g}" for k in
                                                  ("min", "p25", "p50", "p75", "p90", "p99", "max"))))
    scenarios = stats.get("scenarios") or {}
    if scenarios:
        rows.append(("scenarios", f"{len(scenarios)} (users / items / interactions)"))
        rows.extend((f"  {name}", f"{v['users']:,} / {v['items']:,} / {v['interactions']:,}")
                    for name, v in scenarios.items())
    for key, value in (stats.get("split") or {}).items():
        rows.append((key, f"{value:,}"))
    drops = stats.get("drops") or {}
    rows.append(("drops", "none" if not drops else ""))
    rows.extend((f"  {k}", f"{v:,}") for k, v in sorted(drops.items()))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)


def split_stats(split) -> dict[str, int]:
    from recdata.cold_items import cold_item_stats, uses_cold_protocol

    return {
        "train_interactions": sum(len(items) for _, items in split.train_sequences()),
        "valid_examples": len(split.eval_examples("valid")),
        "test_examples": len(split.eval_examples("test")),
        **(cold_item_stats(split) if uses_cold_protocol(split) else {}),
    }


def _run_stats(args, argv: list[str]) -> int:
    from recdata.prepare import DataConfig, load_and_process

    cfg, stats_args = parse_config([DataConfig, StatsArgs], _positional_path(list(argv)))
    stats = load_and_process(cfg).stats()
    sys.stdout.write((json.dumps(stats, indent=2) if stats_args.json else format_stats(stats)) + "\n")
    return 0


def run_prepare(cfg, prep: PrepareArgs) -> dict[str, Any]:
    """Library-callable body of ``data prepare`` (``cfg``: a ``DataConfig``): load, clean, split, save; returns the
    statistics."""
    from recdata.prepare import prepare_dataset

    split = prepare_dataset(cfg)
    stats = {**split.dataset.stats(), "split": split_stats(split), "protocol": split.protocol}
    out = Path(prep.output_dir)
    inputs = [cfg.path, cfg.item_path]
    check_not_overlapping(out, inputs, "data prepare")  # before reading: never a half-written source
    with staged_output_dir(out, "data prepare", inputs=inputs, overwrite=prep.overwrite) as tmp:
        split.save(tmp)
        atomic_write_json(tmp / "stats.json", stats)
        atomic_write_json(tmp / "resolved_config.json", config_to_dict(cfg, prep))
    logger.info("wrote %s (%s)", out, ", ".join(f"{k}={v:,}" for k, v in stats["split"].items()))
    return stats


def _run_prepare(args, argv: list[str]) -> int:
    from recdata.prepare import DataConfig

    cfg, prep = parse_config([DataConfig, PrepareArgs], _positional_path(list(argv)))
    sys.stdout.write(format_stats(run_prepare(cfg, prep)) + "\n")
    return 0
