"""From source files to a ``SplitDataset``: load -> unescape -> rating filter -> unknown items -> dedup ->
k-core -> drop short users -> prune unused items -> validate -> split. Every step counts what it changed in
``drops`` (see ``recdata.processing``), so the saved ``stats.json`` explains each difference from the source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from recdata import processing
from recdata.cold_items import cold_item_split
from recdata.dataset import RecDataset
from recdata.errors import UserError
from recdata.loaders import FORMATS, LoadOptions, detect_format, load_dataset
from recdata.split import SplitDataset, leave_one_out_split, temporal_split

logger = logging.getLogger(__name__)

SPLITS = ("leave_one_out", "temporal")


@dataclass
class DataConfig:
    path: str = field(metadata={"help": "Dataset folder (or a CSV/TSV/Parquet interaction file for tabular)."})
    format: str = field(default="auto", metadata={"help": f"Source layout, one of {list(FORMATS)}; auto detects it.",
                                                        "choices": list(FORMATS)})
    name: str | None = field(default=None, metadata={"help": "Dataset name; picks the file prefix when a folder "
                                                              "holds several datasets (e.g. Scientific)."})
    item_text_fields: str | None = field(default=None, metadata={
        "help": "Map item text fields to source fields/columns, e.g. 'title=movie_title,categories=class'."})
    duplicate_items: str = field(default="error", metadata={
        "help": "A repeated item record: 'error' or 'keep_first' (counted as duplicate_item_records).",
        "choices": ["error", "keep_first"]})
    unknown_items: str = field(default="error", metadata={
        "help": "An interaction with an item missing from the catalogue: 'error' or 'drop' (counted).",
        "choices": ["error", "drop"]})
    user_column: str = field(default="user_id", metadata={"help": "tabular: user id column."})
    item_column: str = field(default="item_id", metadata={"help": "tabular: item id column of the interactions."})
    time_column: str = field(default="timestamp", metadata={
        "help": "tabular: time column (unix seconds or dates); '' keeps file order and disables temporal split."})
    rating_column: str = field(default="", metadata={"help": "tabular: rating column ('' = none)."})
    domain_column: str = field(default="", metadata={"help": "Older name of scenario_column (same meaning)."})
    scenario_column: str = field(default="", metadata={
        "help": "tabular / recbole: per-interaction scenario column ('' = none); a user may span several scenarios."})
    scenario_item_field: str = field(default="", metadata={
        "help": "Item field whose value is the scenario of every interaction with that item (e.g. 'domain' for "
                "lcrec_json, a column of the item table for tabular / recbole, a meta field for amazon_raw)."})
    item_path: str = field(default="", metadata={"help": "tabular: the item table (default <folder>/items.<ext>)."})
    item_id_column: str = field(default="item_id", metadata={"help": "tabular: item id column of the item table."})
    min_rating: float | None = field(default=None, metadata={
        "help": "Drop interactions rated below this (e.g. 4 keeps 4-5 stars); unset keeps all."})
    html_unescape: bool = field(default=True, metadata={"help": "Unescape HTML entities (&amp; -> &) in item text."})
    dedup: bool = field(default=True, metadata={"help": "Keep only the first of repeated (user, item) pairs."})
    kcore: int = field(default=0, metadata={"help": "Iterative k-core on users and items; 0 = off (the shared "
                                                    "Amazon sets are already 5-core)."})
    min_user_interactions: int = field(default=3, metadata={
        "help": "Drop users with fewer interactions (leave-one-out needs 3); counted as short_users."})
    keep_unused_items: bool = field(default=False, metadata={
        "help": "Keep catalogue items no user interacts with (default drops them, counted as unused_items)."})
    max_history: int = field(default=20, metadata={"help": "History length of eval examples and serving."})
    split: str = field(default="leave_one_out", metadata={"help": f"Split protocol, one of {list(SPLITS)}.",
                                                                   "choices": list(SPLITS)})
    temporal_ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={
        "help": "train/valid/test shares of the global temporal split (by target time)."})
    cold_item_fraction: float = field(default=0.0, metadata={
        "help": "Cold-item protocol: this seeded share of catalogue items loses every training interaction "
                "(they stay as valid/test targets and in evaluation histories); 0 = off, 0.05-0.1 typical."})
    cold_item_seed: int = field(default=0, metadata={"help": "Seed that draws the cold items."})

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserError(f"format={self.format!r} is not one of {list(FORMATS)}")
        if self.split not in SPLITS:
            raise UserError(f"split={self.split!r} is not one of {list(SPLITS)}")
        if self.duplicate_items not in ("error", "keep_first"):
            raise UserError(f"duplicate_items={self.duplicate_items!r}: use 'error' or 'keep_first'")
        if self.unknown_items not in ("error", "drop"):
            raise UserError(f"unknown_items={self.unknown_items!r}: use 'error' or 'drop'")
        if self.kcore < 0:
            raise UserError(f"kcore={self.kcore} must be >= 0 (0 turns it off)")
        if self.min_user_interactions < 1:
            raise UserError(f"min_user_interactions={self.min_user_interactions} must be >= 1")
        if self.max_history < 1:
            raise UserError(f"max_history={self.max_history} must be >= 1")
        if not 0.0 <= self.cold_item_fraction < 1.0:
            raise UserError(f"cold_item_fraction={self.cold_item_fraction} must be in [0, 1) (0 turns it off)")
        ratios = list(self.temporal_ratios)
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise UserError(f"temporal_ratios={ratios} must be three non-negative numbers summing to 1")

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            name=self.name, item_text_fields=self.item_text_fields, duplicate_items=self.duplicate_items,
            user_column=self.user_column, item_column=self.item_column, time_column=self.time_column,
            rating_column=self.rating_column, domain_column=self.domain_column, item_path=self.item_path,
            item_id_column=self.item_id_column, scenario_column=self.scenario_column,
            scenario_item_field=self.scenario_item_field,
        )


def load_and_process(cfg: DataConfig) -> RecDataset:
    """Load ``cfg.path`` and apply the configured cleaning; a saved dataset folder is returned as saved."""
    fmt = detect_format(cfg.path) if cfg.format == "auto" else cfg.format
    ds = load_dataset(cfg.path, fmt, cfg.load_options())
    if fmt == "saved":
        logger.info("%s is a saved dataset: returned as saved, no processing applied", cfg.path)
        return ds
    source = str(cfg.path)
    if cfg.html_unescape:
        ds = processing.html_unescape_items(ds)
    if cfg.min_rating is not None:
        ds = processing.filter_min_rating(ds, cfg.min_rating)
    ds = processing.handle_unknown_items(ds, cfg.unknown_items, source)
    if cfg.dedup:
        ds = processing.dedup_interactions(ds)
    if cfg.kcore:
        ds = processing.kcore_filter(ds, cfg.kcore)
    ds = processing.drop_short_users(ds, cfg.min_user_interactions)
    if not cfg.keep_unused_items:
        ds = processing.prune_unused_items(ds)
    if len(ds.sequences) == 0:
        raise UserError(f"{source}: no user is left after filtering (drops: {ds.drops}); relax kcore, min_rating "
                         "or min_user_interactions")
    ds = ds.validate(source)
    ds.warn_untitled(source, "map a title column with item_text_fields, or the text tasks and text embeddings see "
                             "these items without a name")
    return ds


def prepare_dataset(cfg: DataConfig) -> SplitDataset:
    """The split dataset every later stage consumes (save it with ``.save(dir)``)."""
    ds = load_and_process(cfg)
    if "split" in ds.sequences.column_names:
        ds = RecDataset(items=ds.items, sequences=ds.sequences.remove_columns("split"), name=ds.name, drops=ds.drops)
    if cfg.split == "temporal":
        split = temporal_split(ds, tuple(cfg.temporal_ratios), cfg.max_history)
    else:
        split = leave_one_out_split(ds, cfg.max_history)
    return cold_item_split(split, cfg.cold_item_fraction, cfg.cold_item_seed) if cfg.cold_item_fraction else split

