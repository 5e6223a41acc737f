"""``alignrec recipe-tune``: re-tune our recipe on your data, valid targets only, one command, resumable.

    alignrec recipe-tune --run_config configs/amazon_scientific.yaml --budget 12
    alignrec recipe-tune --run_config my_data.yaml --budget 20 --space my_space.yaml --out_dir tunes/mine

The recipe's levers were chosen on one dataset; on another (denser, sparser) they need choosing again. A
coordinate search over pipeline overrides (default: scratch width, dropout, item-head weight, epochs; or the
axes of ``--space``) from the config's own values, each trial a pipeline run scored on the valid targets
(``alignrec.pipeline.recipe_tune``). Writes trials.jsonl (a rerun resumes), trials.md, tuned.yaml (the chosen
overrides) and ``<config>.tuned.yaml`` (the whole config with them, ready for ``alignrec run``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

__all__ = ["RecipeTuneConfig", "register"]


@dataclass
class RecipeTuneConfig:
    """Test-blind tuning of our recipe on a run config's data."""

    run_config: str = field(default="", metadata={"help": "The pipeline YAML to tune: its data, and its values as "
                                                          "the start point; the stages upstream of train run once."})
    budget: int = field(default=12, metadata={"help": "Trials (pipeline runs up to evaluate), the start point "
                                                      "included; a rerun with a larger budget continues."})
    space: str = field(default="", metadata={"help": "YAML of the axes: `section.key: [values]`, or `label: "
                                                     "[{section.key: value, ...}, ...]` for keys moved together; "
                                                     "empty = the scratch recipe's levers (RECIPE_SPACE)."})
    out_dir: str = field(default="", metadata={"help": "Output folder (trials, tuned configs, the trial runs); "
                                                       "default <runs_dir>/<name>__recipe_tune; a rerun resumes."})
    seed: int = field(default=42, metadata={"help": "Seed of the random points once the coordinate search stops "
                                                    "improving (trainings keep the config's own seeds)."})
    base_run: str = field(default="", metadata={"help": "A finished run of this config under another name (e.g. "
                                                     "runs/<name>__seed42 from bench_quality.py --seeds): its stages "
                                                     "are hard-linked into the base run where it has none, so they "
                                                     "are not computed again (a stage whose key differs re-runs)."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not "
                                                             "create (its files are kept)."})

    def __post_init__(self) -> None:
        if not self.run_config:
            raise ValueError("--run_config is required: the pipeline YAML whose recipe is tuned")
        if self.budget < 1:
            raise ValueError(f"--budget must be >= 1 (trials, the start point included), got {self.budget}")


def register(subparsers) -> None:
    p = subparsers.add_parser("recipe-tune", help="Tune our recipe's levers on a config's valid targets "
                                                  "(resumable).", add_help=False)
    p.set_defaults(handler=_run)


def _run(args, argv) -> int:
    from alignrec.pipeline.recipe_tune import tune_recipe
    from recdata.config import parse_config

    (cfg,) = parse_config([RecipeTuneConfig], argv)
    tune_recipe(cfg.run_config, cfg.budget, space_file=cfg.space, out_dir=cfg.out_dir, seed=cfg.seed,
                overwrite=cfg.overwrite, base_run=cfg.base_run)
    return 0
