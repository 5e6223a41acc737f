"""LC-Rec / LETTER JSON: ``X.inter.json`` ``{user: [item, ...]}`` (chronological) + ``X.item.json``
``{item: {title, description, brand, categories}}``. Ids are kept as the strings of the file (0-based idx).

``scenario_item_field`` (e.g. ``domain``) names an extra item field that labels every interaction with that item."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from recdata.dataset import RecDataset
from recdata.errors import ConfigError, InputFileError, UserError
from recdata.loaders.common import (
    LoadOptions,
    build_items,
    build_sequences,
    item_scenarios,
    join_text,
    make_dataset,
    not_utf8,
    parse_item_text_fields,
    scenario_column,
    text_problem,
    warn_non_text,
)

DEFAULT_FIELDS = {"title": "title", "description": "description", "brand": "brand", "categories": "categories"}


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _key_line(text: str, key: str, occurrence: int) -> int | None:
    """Line number of the n-th occurrence of ``"key":`` (for error messages only)."""
    for n, m in enumerate(re.finditer(r'"' + re.escape(key) + r'"\s*:', text)):
        if n == occurrence:
            return text.count("\n", 0, m.start()) + 1
    return None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A top-level JSON object; malformed JSON and repeated top-level keys raise naming file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of the JSON
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}, column {exc.colno}); fix the file") from exc
    except _DuplicateKey as exc:
        line = _key_line(text, exc.key, 1)
        where = f"{path}:{line}" if line else str(path)
        raise UserError(
            f"{where}: duplicate {what} id {exc.key!r} (JSON would silently keep only the last); merge the records"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object keyed by {what} id, got {type(data).__name__}")
    return data


def find_pair(folder: Path, name: str | None) -> tuple[Path, Path]:
    inters = sorted(folder.glob("*.inter.json"))
    if name:
        inters = [p for p in inters if p.name == f"{name}.inter.json"]
    if len(inters) != 1:
        found = [p.name for p in sorted(folder.glob("*.inter.json"))]
        raise InputFileError(
            f"{folder}: expected exactly one <Name>.inter.json{f' with Name={name!r}' if name else ''}, found {found}; "
            "set name=<Name> to choose"
        )
    prefix = inters[0].name[: -len(".inter.json")]
    item_file = folder / f"{prefix}.item.json"
    if not item_file.is_file():
        raise InputFileError(f"{folder}: {inters[0].name} has no matching {item_file.name}")
    return inters[0], item_file


def load_lcrec_json(path: str | Path, options: LoadOptions | None = None) -> RecDataset:
    options = options or LoadOptions()
    inter_file, item_file = find_pair(Path(path), options.name)
    name = options.name or inter_file.name[: -len(".inter.json")]
    fields = parse_item_text_fields(options.item_text_fields, DEFAULT_FIELDS)
    if scenario_column(options):
        raise ConfigError("scenario_column does not apply to LC-Rec JSON (interactions carry no columns); use "
                         "scenario_item_field=<item field>, e.g. domain")

    raw_items = read_json_object(item_file, "item")
    item_ids = list(raw_items)
    columns: dict[str, list[str]] = {f: [] for f in fields}
    non_text: dict[str, list[tuple[str, object]]] = {f: [] for f in fields}
    for item_id in item_ids:
        record = raw_items[item_id]
        if not isinstance(record, dict):
            raise UserError(f"{item_file}: item {item_id!r} is {type(record).__name__}, expected an object of text fields")
        for field, src in fields.items():
            value = record.get(src) if src else None
            if text_problem(value):
                non_text[field].append((item_id, value))
            columns[field].append(join_text(value, ", ") if src else "")
    warn_non_text(non_text, str(item_file))
    items = build_items(item_ids, columns)  # repeated keys were rejected by read_json_object

    raw_seqs = read_json_object(inter_file, "user")
    users, seqs = [], []
    for user_id, seq in raw_seqs.items():
        if not isinstance(seq, list):
            raise UserError(f"{inter_file}: user {user_id!r} maps to {type(seq).__name__}, expected a list of item ids")
        for position, item in enumerate(seq):
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                shown = "null" if item is None else json.dumps(item)
                what = "null" if item is None else f"{shown} (a {type(item).__name__})"
                raise UserError(f"{inter_file}: user {user_id!r}, position {position}: item id is {what}; each user "
                                "maps to a flat list of item ids (strings or integers)")
        users.append(str(user_id))
        seqs.append([str(i) for i in seq])
    sequences = build_sequences({"user_id": users, "item_ids": seqs})
    scenario_of = None
    if options.scenario_item_field:
        field = options.scenario_item_field
        scenario_of = item_scenarios(item_ids, [raw_items[i].get(field) for i in item_ids], field, str(item_file))
    return make_dataset(items, sequences, name, f"{inter_file} + {item_file.name}", scenario_of=scenario_of)

