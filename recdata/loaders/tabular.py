"""Generic CSV / TSV / Parquet with named columns: an interaction table (user, item[, time, rating, scenario])
and an item table (id + text columns[, scenario]). A scenario comes per interaction (``scenario_column``) or
per item (``scenario_item_field``, a column of the item table). ``path`` is the interaction file, or a folder holding
``interactions.<ext>`` and ``items.<ext>``; ``item_path`` overrides the item file.

Times may be integers (unix seconds) or date strings (parsed as UTC, stored as unix seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recdata.dataset import ITEM_TEXT_FIELDS, RecDataset
from recdata.errors import InputFileError, UserError
from recdata.loaders.common import (
    LoadOptions,
    build_items,
    item_scenarios,
    make_dataset,
    not_utf8,
    parse_item_text_fields,
    scenario_column,
    sequences_from_log,
    unique_item_rows,
)

EXTENSIONS = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz")


def find_table(folder: Path, stem: str) -> Path | None:
    hits = [folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
    if len(hits) > 1:
        raise InputFileError(f"{folder}: several {stem} tables {[h.name for h in hits]}; keep one")
    return hits[0] if hits else None


def read_table(path: Path) -> pd.DataFrame:
    """All columns as strings (ids stay exactly as written); CSV errors name the file and line."""
    if not path.is_file():
        raise InputFileError(f"table {path} does not exist")
    if path.name.endswith(".parquet"):
        import pyarrow as pa

        try:
            df = pd.read_parquet(path)
        except (pa.ArrowException, OSError) as exc:  # not a parquet file, truncated, wrong footer
            raise UserError(f"{path} is not a readable Parquet file ({' '.join(str(exc).split())[:160]}); "
                            "write it again (e.g. DataFrame.to_parquet) or give a CSV") from None
        return df.astype({c: "string" for c in df.columns})
    sep = "\t" if ".tsv" in path.name else ","
    try:
        return pd.read_csv(path, sep=sep, dtype="string", keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; it needs a header line naming the columns, then one row per "
                        "record") from None
    except pd.errors.ParserError as exc:
        raise UserError(f"{path}: malformed line ({exc}); fix the quoting or field count of that line") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except (EOFError, OSError) as exc:  # a .gz that is not gzip, or was cut short while copying
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O error: the CLI names the path and the cause
        raise UserError(f"{path} is damaged ({exc}); copy or compress it again") from None


def _line(path: Path, row: int) -> str:
    """Human location of a DataFrame row (CSV: the file line, counting the header)."""
    return f"{path}:{row + 2}" if not path.name.endswith(".parquet") else f"{path} row {row}"


def _require(df: pd.DataFrame, path: Path, columns: dict[str, str]) -> None:
    missing = {opt: col for opt, col in columns.items() if col and col not in df.columns}
    if missing:
        raise UserError(
            f"{path}: column(s) {sorted(missing.values())} not found (set by {sorted(missing)}); "
            f"the file has {list(df.columns)}"
        )


def _non_null(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    values = df[col]
    nulls = np.flatnonzero(values.isna().to_numpy())
    if len(nulls):
        raise UserError(f"{_line(path, int(nulls[0]))}: empty {col!r} ({len(nulls)} such rows); fill or remove them")
    return values.str.strip()


def _times(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Unix seconds from a numeric column, or from dates when no value is numeric; the first bad value raises."""
    values = _non_null(df, col, path)
    numeric = pd.to_numeric(values, errors="coerce")
    is_numeric = bool(numeric.notna().any())
    parsed = numeric if is_numeric else pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise UserError(f"{_line(path, int(bad[0]))}: time {values.iloc[bad[0]]!r} is neither a number nor a date; "
                         "fix it or set time_column='' to keep file order")
    if is_numeric:
        return numeric.to_numpy(dtype=np.float64).astype(np.int64)
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def resolve_paths(path: Path, options: LoadOptions) -> tuple[Path, Path]:
    if path.is_dir():
        inter = find_table(path, "interactions")
        items = Path(options.item_path) if options.item_path else find_table(path, "items")
        if inter is None or items is None:
            raise InputFileError(
                f"{path}: tabular layout needs interactions.<csv|tsv|parquet> and items.<csv|tsv|parquet> "
                "(or pass the interaction file as path and item_path)"
            )
        return inter, items
    if not options.item_path:
        raise UserError(f"{path}: a tabular interaction file needs item_path (the item table with id and text)")
    return path, Path(options.item_path)


def load_tabular(path: str | Path, options: LoadOptions | None = None) -> RecDataset:
    options = options or LoadOptions()
    inter_file, item_file = resolve_paths(Path(path), options)
    fields = parse_item_text_fields(options.item_text_fields, {f: f for f in ITEM_TEXT_FIELDS})

    item_df = read_table(item_file)
    _require(item_df, item_file, {"item_id_column": options.item_id_column})
    text_cols = {f: c for f, c in fields.items() if c}
    absent = sorted(f"{f}={c}" for f, c in text_cols.items() if c not in item_df.columns)
    if absent and options.item_text_fields:
        raise UserError(f"{item_file}: item_text_fields names column(s) {absent} not in {list(item_df.columns)}")
    ids = _non_null(item_df, options.item_id_column, item_file).tolist()
    lines = list(range(2, len(ids) + 2))
    keep = unique_item_rows(ids, str(item_file), options.duplicate_items, lines)
    columns = {f: item_df[c].fillna("").iloc[keep].tolist() for f, c in text_cols.items() if c in item_df.columns}
    items = build_items([ids[i] for i in keep], columns)
    scenario_of = None
    if options.scenario_item_field:
        _require(item_df, item_file, {"scenario_item_field": options.scenario_item_field})
        values = item_df[options.scenario_item_field].fillna("").iloc[keep].tolist()
        scenario_of = item_scenarios([ids[i] for i in keep], values, options.scenario_item_field, str(item_file))
    scen_col = scenario_column(options)

    df = read_table(inter_file)
    _require(df, inter_file, {"user_column": options.user_column, "item_column": options.item_column,
                              "time_column": options.time_column, "rating_column": options.rating_column,
                              "scenario_column": scen_col})
    users = _non_null(df, options.user_column, inter_file).tolist()
    item_seq = _non_null(df, options.item_column, inter_file).tolist()
    times = _times(df, options.time_column, inter_file) if options.time_column else None
    ratings = None
    if options.rating_column:
        ratings = pd.to_numeric(_non_null(df, options.rating_column, inter_file), errors="coerce")
        bad = np.flatnonzero(ratings.isna().to_numpy())
        if len(bad):
            raise UserError(f"{_line(inter_file, int(bad[0]))}: non-numeric rating; fix it or unset rating_column")
        ratings = ratings.to_numpy(dtype=np.float64)
    scenarios = _non_null(df, scen_col, inter_file).tolist() if scen_col else None
    sequences = sequences_from_log(users, item_seq, times, ratings, scenarios, source=str(inter_file))
    name = options.name or (Path(path).name if Path(path).is_dir() else inter_file.name.split(".")[0])
    return make_dataset(items, sequences, name, f"{inter_file} + {item_file.name}",
                        {"duplicate_item_records": len(ids) - len(keep)}, scenario_of=scenario_of)
