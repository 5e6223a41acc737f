"""Vocabulary export for teams that do not use alignrec, and its validator.

``export_vocab`` writes, into one folder::

    items.jsonl     {"item_id": str, "codes": [int, ...], "string": "<a_12><b_3>..."} per item
    items.parquet   the same rows, plus one int column per level (code_a, code_b, ...)
    tokens.json     {token: id} for the whole code-token grid in the given HF tokenizer
                    (grid positions 0..T-1 when exported without a tokenizer)
    manifest.json   written last: format version, counts, content hash (+ its recipe), what the codes are
                    aligned with (LLM / tokenizer), sha256 of every file

``validate_vocab`` re-checks all of it: file hashes, one-to-one codes, completeness of items and grid,
strings matching codes, contiguous token ids, and the content hash.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import InputFileError, UserError
from recdata.io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from tokenization.item_tokenizer import LEVEL_LETTERS, ItemTokenizer, code_token, mapping_hash

logger = logging.getLogger(__name__)

VOCAB_FORMAT_VERSION = 1
HASH_RECIPE = (
    'sha256(json.dumps({"format_version": 1, "codebook_sizes": [...], "items": [[item_id, [codes...]], ...]}, '
    "sort_keys=True, ensure_ascii=False).encode('utf-8')), items in items.jsonl order"
)
FILES = ("items.jsonl", "items.parquet", "tokens.json")


def export_vocab(
    item_tokenizer: ItemTokenizer,
    out_dir: str | Path,
    hf_tokenizer: Any = None,
    aligned_with: dict[str, Any] | None = None,
) -> Path:
    """Write the export folder; ``hf_tokenizer`` must already hold the grid (``add_to_tokenizer``) if given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    tok = item_tokenizer
    strings = ["".join(code_token(lv, c) for lv, c in enumerate(row)) for row in tok.codes.tolist()]
    lines = (
        json.dumps({"item_id": i, "codes": row, "string": s}, ensure_ascii=False)
        for i, row, s in zip(tok.item_ids, tok.codes.tolist(), strings, strict=True)
    )
    atomic_write_text(out / "items.jsonl", "".join(line + "\n" for line in lines))
    columns: dict[str, Any] = {
        "item_id": pa.array(tok.item_ids, pa.string()),
        "codes": pa.array(tok.codes.tolist(), pa.list_(pa.int64())),
        "string": pa.array(strings, pa.string()),
    }
    for level in range(tok.num_levels):
        columns[f"code_{LEVEL_LETTERS[level]}"] = pa.array(tok.codes[:, level], pa.int64())
    with atomic_path(out / "items.parquet") as tmp:
        pq.write_table(pa.table(columns), tmp)
    grid = tok.code_tokens()
    ids = tok.code_token_ids(hf_tokenizer) if hf_tokenizer is not None else list(range(len(grid)))
    # grid order, not sorted keys: readers may rely on it
    atomic_write_text(out / "tokens.json", json.dumps(dict(zip(grid, ids, strict=True)), ensure_ascii=False) + "\n")
    tokenizer_info = None
    if hf_tokenizer is not None:
        tokenizer_info = {
            "name_or_path": str(getattr(hf_tokenizer, "name_or_path", "")),
            "vocab_size_with_codes": len(hf_tokenizer),
            "first_code_token_id": ids[0],
        }
    manifest = {
        "format_version": VOCAB_FORMAT_VERSION,
        "num_items": len(tok),
        "num_levels": tok.num_levels,
        "codebook_sizes": tok.codebook_sizes,
        "num_code_tokens": len(grid),
        "token_format": "<{letter}_{code}>, letters a, b, c, ... by level",
        "token_ids": "hf_tokenizer" if hf_tokenizer is not None else "grid_index",
        "content_hash": tok.content_hash,
        "hash_recipe": HASH_RECIPE,
        "aligned_with": {**(aligned_with or {}), "tokenizer": tokenizer_info},
        "files": {name: sha256_file(out / name) for name in FILES},
    }
    atomic_write_json(out / "manifest.json", manifest)
    logger.info("exported %d items / %d code tokens to %s (hash %s)", len(tok), len(grid), out, tok.content_hash[:12])
    return out


def validate_vocab(path: str | Path, expected_item_ids: list[str] | None = None) -> dict[str, Any]:
    """Check an export folder; returns a summary, raises ``ValueError`` listing every problem found."""
    import pyarrow.parquet as pq

    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InputFileError(f"{manifest_path} not found: not a complete vocab export (the manifest is written last)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{manifest_path} is not valid JSON ({exc}); re-run `alignrec vocab export`") from exc
    required = ("format_version", "num_items", "codebook_sizes", "content_hash", "files")
    absent = [key for key in required if key not in manifest] if isinstance(manifest, dict) else list(required)
    if absent or not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("codebook_sizes"), list):
        raise UserError(f"{manifest_path} lacks or mistypes key(s) {absent or ['files', 'codebook_sizes']}; it is not "
                        "a manifest written by `alignrec vocab export`: re-run the export")
    problems: list[str] = []
    if manifest.get("format_version") != VOCAB_FORMAT_VERSION:
        problems.append(f"manifest format_version {manifest.get('format_version')} != {VOCAB_FORMAT_VERSION}")
    for name in FILES:
        if not (path / name).is_file():
            raise InputFileError(f"{path / name} is missing; re-run `alignrec vocab export`")
        if sha256_file(path / name) != manifest["files"].get(name):
            problems.append(f"{name}: sha256 differs from the manifest (file modified after export)")
    sizes = [int(c) for c in manifest["codebook_sizes"]]
    item_ids, codes, strings = [], [], []
    with open(path / "items.jsonl", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                rec = json.loads(line)
                item_ids.append(str(rec["item_id"]))
                codes.append([int(c) for c in rec["codes"]])
                strings.append(rec["string"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{path / 'items.jsonl'}:{lineno}: malformed row ({exc})") from exc
            if len(codes[-1]) != len(sizes):
                problems.append(f"items.jsonl:{lineno}: item {item_ids[-1]!r} has {len(codes[-1])} codes, expected {len(sizes)}")
                codes[-1] = (codes[-1] + [0] * len(sizes))[: len(sizes)]
            elif strings[-1] != "".join(code_token(lv, c) for lv, c in enumerate(codes[-1])):
                problems.append(f"items.jsonl:{lineno}: string {strings[-1]!r} does not spell codes {codes[-1]}")
    table = np.asarray(codes, dtype=np.int64).reshape(len(codes), len(sizes))
    if len(item_ids) != manifest["num_items"]:
        problems.append(f"items.jsonl has {len(item_ids)} items, manifest says {manifest['num_items']}")
    if len(set(item_ids)) != len(item_ids):
        problems.append("items.jsonl repeats item ids")
    for level, size in enumerate(sizes):
        bad = np.flatnonzero((table[:, level] < 0) | (table[:, level] >= size)) if len(table) else []
        if len(bad):
            problems.append(f"item {item_ids[int(bad[0])]!r}: code at level {level} outside [0, {size})")
    duplicates = len(table) - len(np.unique(table, axis=0)) if len(table) else 0
    if duplicates:
        problems.append(f"codes are not one-to-one: {duplicates} items share a code with another item")
    if mapping_hash(item_ids, table, sizes) != manifest["content_hash"]:
        problems.append("content hash of items.jsonl differs from the manifest")
    try:
        parquet = pq.read_table(path / "items.parquet").to_pydict()
        if parquet.get("item_id") != item_ids or parquet.get("codes") != table.tolist():
            problems.append("items.parquet rows differ from items.jsonl")
    except Exception as exc:  # any pyarrow read error is a finding, reported with the rest
        problems.append(f"items.parquet is unreadable: {exc}")
    try:
        tokens = json.loads((path / "tokens.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.append(f"tokens.json is not valid JSON: {exc}")
        tokens = {}
    grid = [code_token(lv, c) for lv, size in enumerate(sizes) for c in range(size)]
    if not isinstance(tokens, dict) or list(tokens) != grid:
        problems.append(f"tokens.json does not hold exactly the {len(grid)}-token grid in level-major order")
    else:
        ids = list(tokens.values())
        if ids != list(range(ids[0], ids[0] + len(ids))):
            problems.append("tokens.json ids are not contiguous in grid order")
    if expected_item_ids is not None:
        missing = sorted(set(expected_item_ids) - set(item_ids))
        if missing:
            problems.append(f"{len(missing)} catalogue items have no code (e.g. {missing[:5]})")
        extra = sorted(set(item_ids) - set(expected_item_ids))
        if extra:
            problems.append(f"{len(extra)} exported items are not in the given dataset (e.g. {extra[:5]}): the export "
                            "was made for another catalogue")
    if problems:
        raise UserError(f"vocab export {path} is invalid ({len(problems)} problem(s)): " + "; ".join(problems))
    return {"ok": True, "path": str(path), "num_items": len(item_ids), "num_code_tokens": len(grid),
            "content_hash": manifest["content_hash"]}
