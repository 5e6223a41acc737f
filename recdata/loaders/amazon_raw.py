"""Raw Amazon Reviews 2018 (and 2014) dumps: ``<Category>_5.json[.gz]`` reviews (reviewerID, asin,
unixReviewTime, overall) + ``meta_<Category>.json[.gz]`` (asin, title, description, brand, category).

Meta lines may be python literals (``{'asin': ...}``, as in some dumps); they are parsed with
``ast.literal_eval``. The catalogue keeps only reviewed items; the other meta records are counted in
``drops["unused_items"]``. ``scenario_item_field`` (e.g. ``main_cat``) names a meta field that labels every
interaction with that item.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from recdata.dataset import RecDataset
from recdata.errors import ConfigError, InputFileError
from recdata.loaders.common import (
    LoadOptions,
    build_items,
    item_scenarios,
    iter_lines,
    join_text,
    make_dataset,
    malformed,
    parse_item_text_fields,
    scenario_column,
    sequences_from_log,
    unique_item_rows,
)

DEFAULT_FIELDS = {"title": "title", "description": "description", "brand": "brand", "categories": "category"}
SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def _is_json_file(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUFFIXES)


def _stem(p: Path) -> str:
    for s in SUFFIXES:
        if p.name.endswith(s):
            return p.name[: -len(s)]
    return p.name


def find_pair(folder: Path, name: str | None) -> tuple[Path, Path]:
    metas = sorted(p for p in folder.iterdir() if _is_json_file(p) and p.name.startswith("meta_"))
    reviews = sorted(p for p in folder.iterdir() if _is_json_file(p) and not p.name.startswith("meta_"))
    if name:
        metas = [p for p in metas if _stem(p) == f"meta_{name}"]
        reviews = [p for p in reviews if _stem(p) in (name, f"{name}_5", f"reviews_{name}_5", f"reviews_{name}")]
    if len(metas) != 1 or len(reviews) != 1:
        raise InputFileError(
            f"{folder}: Amazon raw layout needs one reviews file (<Category>_5.json[.gz]) and one "
            f"meta_<Category>.json[.gz]; found reviews {[p.name for p in reviews]}, meta {[p.name for p in metas]}"
            "; set name=<Category> to choose"
        )
    return reviews[0], metas[0]


def parse_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One JSON (or python-literal) object per line; anything else is a malformed line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise malformed(path, lineno, f"neither JSON nor a python literal: {line[:80]!r}",
                            "fix or remove the line") from None
    if not isinstance(record, dict):
        raise malformed(path, lineno, f"expected one object per line, got {type(record).__name__}", "fix the line")
    return record


def _categories(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):  # 2014: list of paths
        return " | ".join(join_text(path, " > ") for path in value)
    return join_text(value, " > ")


def load_amazon_raw(path: str | Path, options: LoadOptions | None = None) -> RecDataset:
    options = options or LoadOptions()
    reviews_file, meta_file = find_pair(Path(path), options.name)
    name = options.name or _stem(meta_file)[len("meta_"):]
    fields = parse_item_text_fields(options.item_text_fields, DEFAULT_FIELDS)
    if scenario_column(options):
        raise ConfigError("scenario_column does not apply to Amazon raw reviews; use scenario_item_field=<meta field>")

    users, asins, times, ratings = [], [], [], []
    for lineno, line in iter_lines(reviews_file):
        r = parse_record(reviews_file, lineno, line)
        try:
            users.append(str(r["reviewerID"]))
            asins.append(str(r["asin"]))
            times.append(int(r["unixReviewTime"]))
            ratings.append(float(r.get("overall", "nan")))
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed(reviews_file, lineno, f"review lacks or has a bad field ({exc!r})",
                            "each review needs reviewerID, asin, unixReviewTime (and overall)") from None
    reviewed = set(asins)

    ids, lines, records, unused = [], [], [], 0
    for lineno, line in iter_lines(meta_file):
        r = parse_record(meta_file, lineno, line)
        if "asin" not in r:
            raise malformed(meta_file, lineno, "meta record has no asin", "fix or remove the line")
        asin = str(r["asin"])
        if asin not in reviewed:
            unused += 1
            continue
        ids.append(asin)
        lines.append(lineno)
        records.append(r)
    keep = unique_item_rows(ids, str(meta_file), options.duplicate_items, lines)
    columns: dict[str, list[str]] = {f: [] for f in fields}
    for pos in keep:
        for field, src in fields.items():
            value = records[pos].get(src) if src else None
            if field == "categories" and src == "category" and value is None:
                value = records[pos].get("categories")  # 2014 meta
            columns[field].append(_categories(value) if field == "categories" else join_text(value, " "))
    items = build_items([ids[i] for i in keep], columns)
    sequences = sequences_from_log(users, asins, times, ratings, source=str(reviews_file))
    drops = {"duplicate_item_records": len(ids) - len(keep), "unused_items": unused}
    scenario_of = None
    if options.scenario_item_field:
        field = options.scenario_item_field
        scenario_of = item_scenarios([ids[i] for i in keep], [records[i].get(field) for i in keep], field,
                                     str(meta_file))
    return make_dataset(items, sequences, name, f"{reviews_file} + {meta_file.name}", drops, scenario_of=scenario_of)
