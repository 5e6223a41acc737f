"""RecBole atomic files: ``X.inter`` and ``X.item``, tab-separated with a ``name:type`` header line.

ML-100K maps ``movie_title`` + ``release_year`` to title ("Toy Story (1995)") and ``class`` (a space-separated
token_seq) to categories ("Animation, Children's, Comedy"). Interactions are sorted per user by timestamp,
ties kept in file order. A scenario comes from an ``.inter`` column (``scenario_column``) or an ``.item``
column (``scenario_item_field``).
"""

from __future__ import annotations

from pathlib import Path

from recdata.dataset import RecDataset
from recdata.errors import InputFileError
from recdata.loaders.common import (
    LoadOptions,
    build_items,
    item_scenarios,
    iter_lines,
    make_dataset,
    malformed,
    parse_item_text_fields,
    scenario_column,
    sequences_from_log,
    unique_item_rows,
)

# our field -> candidate RecBole field names (first present wins)
CANDIDATES = {
    "title": ("movie_title", "title", "item_name", "name"),
    "description": ("description", "overview"),
    "brand": ("brand", "sales_type"),
    "categories": ("class", "categories", "genre", "category"),
}
YEAR_FIELDS = ("release_year", "year")


def _header(path: Path, line: str) -> tuple[list[str], list[str]]:
    names, types = [], []
    for col in line.split("\t"):
        if ":" not in col:
            raise malformed(path, 1, f"header column {col!r} is not name:type", "RecBole headers look like user_id:token")
        name, typ = col.rsplit(":", 1)
        names.append(name.strip())
        types.append(typ.strip())
    return names, types


def _rows(path: Path):
    """Yield (lineno, dict of raw string values); the first line is the header."""
    lines = iter_lines(path)
    try:
        _, head = next(lines)
    except StopIteration:
        raise malformed(path, None, "file is empty", "a RecBole atomic file starts with a name:type header") from None
    names, _types = _header(path, head)
    for lineno, line in lines:
        values = line.split("\t")
        if len(values) != len(names):
            raise malformed(path, lineno, f"{len(values)} tab-separated fields, header has {len(names)} ({names})",
                            "fix or remove the line (fields must be separated by single tabs)")
        yield lineno, dict(zip(names, values, strict=True))


def find_pair(folder: Path, name: str | None) -> tuple[Path, Path]:
    inters = sorted(p for p in folder.glob("*.inter") if not name or p.stem == name)
    if len(inters) != 1:
        found = [p.name for p in sorted(folder.glob("*.inter"))]
        raise InputFileError(f"{folder}: expected exactly one <Name>.inter, found {found}; set name=<Name> to choose")
    item_file = inters[0].with_suffix(".item")
    if not item_file.is_file():
        raise InputFileError(f"{folder}: {inters[0].name} has no matching {item_file.name}")
    return inters[0], item_file


def load_recbole(path: str | Path, options: LoadOptions | None = None) -> RecDataset:
    options = options or LoadOptions()
    inter_file, item_file = find_pair(Path(path), options.name)
    name = options.name or inter_file.stem

    ids, lines, records = [], [], []
    for lineno, row in _rows(item_file):
        if "item_id" not in row:
            raise malformed(item_file, 1, "no item_id column", "the item file needs an item_id:token column")
        ids.append(row["item_id"])
        lines.append(lineno)
        records.append(row)
    header = set(records[0]) if records else set()
    defaults = {f: next((c for c in cands if c in header), "") for f, cands in CANDIDATES.items()}
    fields = parse_item_text_fields(options.item_text_fields, defaults)
    year_field = next((y for y in YEAR_FIELDS if y in header), "")
    keep = unique_item_rows(ids, str(item_file), options.duplicate_items, lines)
    columns: dict[str, list[str]] = {f: [] for f in fields}
    for pos in keep:
        row = records[pos]
        for field, src in fields.items():
            value = row.get(src, "").strip() if src else ""
            if field == "categories":
                value = ", ".join(value.split())
            if field == "title" and year_field and row[year_field].strip():
                value = f"{value} ({row[year_field].strip()})"
            columns[field].append(value)
    items = build_items([ids[i] for i in keep], columns)
    scenario_of = None
    if options.scenario_item_field:
        if options.scenario_item_field not in header:
            raise malformed(item_file, 1, f"no {options.scenario_item_field!r} column (scenario_item_field)",
                            f"the header has {sorted(header)}")
        scenario_of = item_scenarios([ids[i] for i in keep], [records[i][options.scenario_item_field] for i in keep],
                                     options.scenario_item_field, str(item_file))
    scen_col = scenario_column(options)

    users, item_seq, times, ratings, scenarios = [], [], [], [], []
    has_time = has_rating = None
    for lineno, row in _rows(inter_file):
        if has_time is None:
            missing = [c for c in ("user_id", "item_id") if c not in row]
            if missing:
                raise malformed(inter_file, 1, f"no {missing} column(s)", "the header needs user_id:token item_id:token")
            has_time, has_rating = "timestamp" in row, "rating" in row
            if scen_col and scen_col not in row:
                raise malformed(inter_file, 1, f"no {scen_col!r} column (scenario_column)", f"the header has {sorted(row)}")
        user, item = row["user_id"].strip(), row["item_id"].strip()
        if not user or not item:
            raise malformed(inter_file, lineno, "empty user_id or item_id", "fill in or remove the line")
        users.append(user)
        item_seq.append(item)
        if scen_col:
            scenarios.append(row[scen_col])
        try:
            if has_time:
                times.append(int(float(row["timestamp"])))
            if has_rating:
                ratings.append(float(row["rating"]))
        except ValueError as exc:
            raise malformed(inter_file, lineno, f"non-numeric timestamp/rating ({exc})", "fix the value") from None
    sequences = sequences_from_log(users, item_seq, times if has_time else None, ratings if has_rating else None,
                                   scenarios if scen_col else None, source=str(inter_file))
    return make_dataset(items, sequences, name, f"{inter_file} + {item_file.name}",
                        {"duplicate_item_records": len(ids) - len(keep)}, scenario_of=scenario_of)
