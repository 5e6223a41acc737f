"""Building blocks every loader shares: opening (gzipped) text, errors that name file and line, and the
conversion of a flat interaction log into chronological per-user sequences.

Loaders only read and reshape; they never drop or fix data. Anything that changes content (dedup, k-core,
rating filter, unescaping) lives in ``recdata.processing`` where it is counted in ``RecDataset.drops``.
"""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from recdata.dataset import ITEM_TEXT_FIELDS, RecDataset
from recdata.errors import ConfigError, UserError
from recdata.text_safety import clean_item_text

logger = logging.getLogger(__name__)

ITEM_FEATURES = datasets.Features(
    {"item_id": datasets.Value("string"), **{f: datasets.Value("string") for f in ITEM_TEXT_FIELDS}}
)


@dataclass
class LoadOptions:
    """What a loader needs beyond the path (built from ``DataConfig`` by ``recdata.prepare``)."""

    name: str | None = None  # dataset name; also picks the file prefix when a folder holds several datasets
    item_text_fields: str | dict[str, str] | None = None  # "title=movie_title,categories=class" over defaults
    duplicate_items: str = "error"  # error | keep_first
    # tabular (CSV/TSV/Parquet) column names; "" = absent
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    rating_column: str = ""
    domain_column: str = ""  # older name of scenario_column (same meaning: a per-interaction label)
    scenario_column: str = ""  # tabular / RecBole: per-interaction scenario column ("" = none)
    scenario_item_field: str = ""  # item field every interaction with the item takes its scenario from
    item_path: str = ""
    item_id_column: str = "item_id"


def open_text(path: str | Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz``; a UTF-8 byte-order mark is dropped, not read as text."""
    path = Path(path)
    encoding = "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def not_utf8(path: str | Path, exc: UnicodeDecodeError, lineno: int | None = None) -> UserError:
    """The error for a file that is not in the expected encoding (a bare UnicodeDecodeError names no file)."""
    where = f"{path}:{lineno}" if lineno is not None else str(path)
    return UserError(f"{where}: not valid {exc.encoding.upper()} text (byte "
                     f"{exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}); re-save the file as UTF-8 "
                     "(e.g. iconv -f latin1 -t utf-8)")


def iter_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) for each non-blank line."""
    with open_text(path, encoding) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc, lineno + 1) from None


def text_problem(value: Any) -> str | None:
    """Why ``value`` is not usable item text ('a dict', 'a list of numbers'), or None when it is text.

    Strings, None and (nested) lists of strings are text; ``join_text`` renders the rest with ``str()``, which
    puts ``"{'a': 1}"`` into a prompt: loaders count such values and warn.
    """
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, (list, tuple)):
        inner = [text_problem(v) for v in value]
        bad = next((p for p in inner if p), None)
        return f"a list holding {bad}" if bad else None
    return f"a {type(value).__name__}"


def warn_non_text(counts: dict[str, list[tuple[str, Any]]], source: str) -> None:
    """One warning per item field with values that were not text: count and the first example."""
    for field, bad in counts.items():
        if bad:
            item_id, value = bad[0]
            logger.warning("%s: %d item(s) have a %s that is not text (e.g. item %r: %r is %s); stored as its str() "
                           "form; fix the source or map another field with item_text_fields", source, len(bad), field,
                           item_id, value, text_problem(value))


def malformed(path: str | Path, lineno: int | None, what: str, fix: str) -> UserError:
    where = f"{path}:{lineno}" if lineno is not None else str(path)
    return UserError(f"{where}: {what}; {fix}")


def parse_item_text_fields(spec: str | dict[str, str] | None, defaults: dict[str, str]) -> dict[str, str]:
    """Merge a user mapping ``"title=movie_title,categories=class"`` (or dict) over a loader's defaults.

    Keys are our item fields (title, description, brand, categories), values the source field/column names;
    an empty value means "leave this field empty".
    """
    mapping = dict(defaults)
    if not spec:
        return mapping
    if isinstance(spec, str):
        pairs: dict[str, str] = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UserError(
                    f"item_text_fields entry {part!r} is not FIELD=SOURCE; e.g. 'title=movie_title,categories=class'"
                )
            key, value = part.split("=", 1)
            pairs[key.strip()] = value.strip()
        spec = pairs
    unknown = sorted(set(spec) - set(ITEM_TEXT_FIELDS))
    if unknown:
        raise UserError(f"item_text_fields names unknown field(s) {unknown}; valid fields are {list(ITEM_TEXT_FIELDS)}")
    mapping.update({k: str(v or "") for k, v in spec.items()})
    return mapping


def build_items(item_ids: Sequence[str], columns: dict[str, Sequence[str]]) -> datasets.Dataset:
    """The item table with every text field present ('' where the source has none)."""
    n = len(item_ids)
    data: dict[str, list[str]] = {"item_id": [str(i) for i in item_ids]}
    for f in ITEM_TEXT_FIELDS:
        values = columns.get(f)
        data[f] = ["" if v is None else str(v) for v in values] if values is not None else [""] * n
    return datasets.Dataset.from_dict(data, features=ITEM_FEATURES)


def scenario_column(options: LoadOptions) -> str:
    """The per-interaction scenario column (``scenario_column``, or its older name ``domain_column``)."""
    if options.scenario_column and options.domain_column and options.scenario_column != options.domain_column:
        raise ConfigError(f"scenario_column={options.scenario_column!r} and domain_column={options.domain_column!r} "
                         "name the same thing; set only scenario_column")
    if (options.scenario_column or options.domain_column) and options.scenario_item_field:
        raise ConfigError("set either scenario_column (a per-interaction label) or scenario_item_field (an item "
                         "field), not both")
    return options.scenario_column or options.domain_column


def item_scenarios(item_ids: Sequence[str], values: Sequence[Any], field: str, source: str) -> dict[str, str]:
    """``{item_id: scenario}`` from an item field; an item without a value is an error naming it."""
    out = {}
    for item_id, value in zip(item_ids, values, strict=True):
        label = join_text(value, " ").strip()
        if not label:
            raise UserError(f"{source}: item {item_id!r} has no {field!r} value, so its interactions have no "
                             f"scenario; fill the field or unset scenario_item_field")
        out[str(item_id)] = label
    return out


def with_item_scenarios(sequences: datasets.Dataset, scenario_of: dict[str, str]) -> datasets.Dataset:
    """Add the per-interaction ``scenarios`` column: each interaction takes its item's scenario.

    An item missing from the catalogue gets '' here; ``handle_unknown_items`` then raises or drops it.
    """
    columns = sequences.to_dict()
    columns["scenarios"] = [[scenario_of.get(i, "") for i in seq] for seq in columns["item_ids"]]
    return build_sequences(columns)


def sequence_features(has_timestamps: bool, has_ratings: bool, has_domain: bool,
                      has_scenarios: bool = False) -> datasets.Features:
    feats: dict[str, Any] = {
        "user_id": datasets.Value("string"),
        "item_ids": datasets.Sequence(datasets.Value("string")),
    }
    if has_timestamps:
        feats["timestamps"] = datasets.Sequence(datasets.Value("int64"))
    if has_ratings:
        feats["ratings"] = datasets.Sequence(datasets.Value("float64"))
    if has_domain:
        feats["domain"] = datasets.Value("string")
    if has_scenarios:
        feats["scenarios"] = datasets.Sequence(datasets.Value("string"))
    return datasets.Features(feats)


def build_sequences(columns: dict[str, list]) -> datasets.Dataset:
    """A sequences table from ready per-user columns (user_id, item_ids[, timestamps, ratings, domain, scenarios])."""
    feats = sequence_features("timestamps" in columns, "ratings" in columns, "domain" in columns,
                              "scenarios" in columns)
    return datasets.Dataset.from_dict({k: columns[k] for k in feats}, features=feats)


def sequences_from_log(
    users: Sequence[Any],
    items: Sequence[Any],
    timestamps: Sequence[int] | None = None,
    ratings: Sequence[float] | None = None,
    scenarios: Sequence[Any] | None = None,
    source: str = "<log>",
) -> datasets.Dataset:
    """Group a flat interaction log into per-user chronological sequences.

    Users keep the order of their first appearance; each user's interactions are sorted by timestamp with
    ties kept in file order (a stable sort), so reloading the same file always gives the same sequences.
    ``scenarios`` (one label per interaction) becomes the ``scenarios`` column, aligned with ``item_ids``:
    a user may have interactions in any number of scenarios.
    """
    n = len(users)
    user_codes, user_ids = pd.factorize(pd.Series(users, dtype="string"), sort=False)
    keys = [np.arange(n)]
    if timestamps is not None:
        ts = np.asarray(timestamps, dtype=np.int64)
        keys.append(ts)
    keys.append(user_codes)
    order = np.lexsort(keys)  # last key is primary: user, then time, then file position
    sorted_users = user_codes[order]
    bounds = np.flatnonzero(np.diff(sorted_users)) + 1
    item_arr = np.asarray([str(i) for i in items], dtype=object)[order]
    columns: dict[str, list] = {
        "user_id": [str(u) for u in user_ids],
        "item_ids": [chunk.tolist() for chunk in np.split(item_arr, bounds)] if n else [],
    }
    if timestamps is not None:
        columns["timestamps"] = [c.tolist() for c in np.split(ts[order], bounds)] if n else []
    if ratings is not None:
        r = np.asarray(ratings, dtype=np.float64)[order]
        columns["ratings"] = [c.tolist() for c in np.split(r, bounds)] if n else []
    if scenarios is not None:
        labels = np.asarray([str(s).strip() for s in scenarios], dtype=object)
        empty = np.flatnonzero(labels == "")
        if len(empty):
            raise UserError(f"{source}: interaction {int(empty[0]) + 1} (user {str(users[empty[0]])!r}) has an empty "
                             f"scenario ({len(empty)} such); fill the scenario column or unset it")
        columns["scenarios"] = [c.tolist() for c in np.split(labels[order], bounds)] if n else []
    return build_sequences(columns)


def make_dataset(
    items: datasets.Dataset, sequences: datasets.Dataset, name: str, source: str, drops: dict[str, int] | None = None,
    scenario_of: dict[str, str] | None = None,
) -> RecDataset:
    """Wrap loader output; an empty catalogue is rejected here, naming the file to check.

    ``scenario_of`` (``{item_id: scenario}`` from an item field) labels every interaction with its item's scenario.
    """
    if len(items) == 0:
        raise UserError(f"{source}: the item catalogue is empty; check the item file path, format and field names")
    if scenario_of is not None:
        sequences = with_item_scenarios(sequences, scenario_of)
    items = clean_item_text(items, source)  # control characters never reach prompts, exports or terminals
    ds = RecDataset(items=items, sequences=sequences, name=name, drops={k: v for k, v in (drops or {}).items() if v})
    logger.info("loaded %s: %d users, %d items, %d interactions from %s",
                name, len(sequences), len(items), ds.num_interactions(), source)
    return ds


def unique_item_rows(
    ids: Sequence[str], source: str, policy: str = "error", lines: Sequence[int] | None = None
) -> list[int]:
    """Positions of the rows to keep when an item id repeats: raise (``error``) or keep the first record.

    Amazon 2018 meta dumps repeat some asins, so ``keep_first`` exists; elsewhere a repeat means a broken
    file and the error names both lines.
    """
    if policy not in ("error", "keep_first"):
        raise UserError(f"duplicate_items must be 'error' or 'keep_first', got {policy!r}")
    first: dict[str, int] = {}
    keep: list[int] = []
    for pos, value in enumerate(ids):
        if value in first:
            if policy == "error":
                where = f"{source}:{lines[pos]} (first seen at line {lines[first[value]]})" if lines else source
                raise UserError(
                    f"{where}: duplicate item id {value!r}; item ids must be unique: remove or merge the repeated "
                    "record, or set duplicate_items=keep_first to keep the first record (counted in drops)"
                )
            continue
        first[value] = pos
        keep.append(pos)
    if len(keep) < len(ids):
        logger.warning("%s: dropped %d repeated item record(s), kept the first of each", source, len(ids) - len(keep))
    return keep


def join_text(value: Any, sep: str) -> str:
    """A text field from a scalar or a (nested) list, e.g. Amazon's ``category`` list -> 'A > B > C'."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = [join_text(v, sep) for v in value]
        return sep.join(p for p in parts if p)
    return str(value)
