"""The bad-input table, data files: what `alignrec data prepare` / `data stats` get from real exports.

Empty, header-only, binary and damaged (truncated .gz, not-Parquet) files, wrong or extra columns, duplicate ids,
non-UTF-8 text, byte-order marks, CRLF line ends and hostile text (ANSI escapes, NUL, bidi overrides, chat-template
and item-code strings), in the tabular (CSV / TSV / Parquet) and LC-Rec JSON layouts. Each is a one-line error
naming the file (and line), a counted warning, or a correct accept checked against the expected sequences.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.cli.bad_inputs import Case, Workspace
from tests.recdata.recdata_sources import EXPECTED, ITEMS, LOG, write_lcrec

TITLES = {i: v["title"].replace("&amp;", "&") for i, v in ITEMS.items() if i != "i5"}
HEADER = "user_id,item_id,timestamp"


def _tabular(ws: Workspace, rows: list[tuple] | None = None, header: str = HEADER, titles: dict | None = None,
             encoding: str = "utf-8", newline: str = "\n", bom: bool = False, ext: str = "csv") -> Path:
    """``interactions.<ext>`` + ``items.<ext>`` in ``ws.case / tab`` (the LOG of ``recdata_sources`` by default)."""
    folder = ws.case / "tab"
    folder.mkdir(exist_ok=True)
    sep = "\t" if ext == "tsv" else ","
    rows = [(u, i, t) for u, i, t, _ in LOG] if rows is None else rows
    items = TITLES if titles is None else titles
    for name, head, lines in (("interactions", header, [sep.join(map(str, r)) for r in rows]),
                              ("items", "item_id,title", [f"{k}{sep}{v}" for k, v in items.items()])):
        text = newline.join([head.replace(",", sep), *lines]) + newline
        (folder / f"{name}.{ext}").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return folder


def _prep(ws: Workspace, path: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "--path", str(path), "--output_dir", str(ws.case / "out"), *extra]


def _tab(ws: Workspace, *extra: str, **kw) -> list[str]:
    return _prep(ws, _tabular(ws, **kw), "--format", "tabular", *extra)


def _replace(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _lcrec(ws: Workspace, inter: bytes | None = None, items: bytes | None = None) -> Path:
    src = write_lcrec(ws.case / "src")
    if inter is not None:
        _replace(src, "Tiny.inter.json", inter)
    if items is not None:
        _replace(src, "Tiny.item.json", items)
    return src


def _items_json(**changes: dict) -> bytes:
    return json.dumps({k: {**v, **changes.get(k, {})} for k, v in ITEMS.items()}).encode()


def _sequences(ws: Workspace) -> dict[str, list[str]]:
    from recdata.split import SplitDataset

    seqs = SplitDataset.load(ws.case / "out").dataset.sequences
    return dict(zip(seqs["user_id"], seqs["item_ids"], strict=True))


def expected_sequences(ws: Workspace) -> None:
    assert _sequences(ws) == EXPECTED, _sequences(ws)


def _titles(ws: Workspace) -> dict[str, str]:
    from recdata.split import SplitDataset

    return {k: v["title"] for k, v in SplitDataset.load(ws.case / "out").dataset.item_table().items()}


def _no_output(ws: Workspace) -> None:
    out = ws.case / "out"
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")], list(out.iterdir())


def _gz(ws: Workspace, truncate: bool) -> Path:
    folder = _tabular(ws)
    data = gzip.compress((folder / "interactions.csv").read_bytes())
    (folder / "interactions.csv").unlink()
    (folder / "interactions.csv.gz").write_bytes(data[: len(data) // 2] if truncate else b"\x84\xbe not gzip")
    return folder


def _parquet_garbage(ws: Workspace) -> Path:
    folder = _tabular(ws)
    (folder / "interactions.csv").unlink()
    (folder / "items.csv").unlink()
    (folder / "interactions.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (folder / "items.parquet").write_bytes(b"")
    return folder


LOG_ROWS = [(u, i, t) for u, i, t, _ in LOG]
HOSTILE = {**TITLES, "i1": "\x1b[2J\x1b[31mPipette", "i2": "Glo\u202eves", "i3": "Glasses\x00"}
TOKEN_TITLES = {**TITLES, "i1": "<a_1><b_1>", "i2": "<|im_end|>", "i3": "<|endoftext|> ok"}

CASES: list[Case] = [
    # ---- tabular: encodings, line ends, byte-order marks (correct accepts) ------------------------------------
    Case("tab-ok", lambda w: _tab(w), "ok", 0, "", check=expected_sequences),
    Case("tab-bom", lambda w: _tab(w, bom=True), "ok", 0, "", check=expected_sequences),
    Case("tab-crlf", lambda w: _tab(w, newline="\r\n"), "ok", 0, "", check=expected_sequences),
    Case("tab-bom-crlf", lambda w: _tab(w, bom=True, newline="\r\n"), "ok", 0, "", check=expected_sequences),
    Case("tab-tsv", lambda w: _tab(w, ext="tsv"), "ok", 0, "", check=expected_sequences),
    Case("tab-float-times", lambda w: _tab(w, rows=[(u, i, t + 0.5) for u, i, t in LOG_ROWS]), "ok", 0, "",
         check=expected_sequences),
    Case("tab-date-times", lambda w: _tab(w, rows=[(u, i, f"2024-01-01T00:{t:02d}:00") for u, i, t in LOG_ROWS]), "ok", 0,
         "", check=expected_sequences),
    Case("tab-repeated-interaction", lambda w: _tab(w, rows=[*LOG_ROWS, ("u1", "i1", 10)]), "ok", 0, "",
         check=expected_sequences),
    Case("tab-token-strings-in-titles", lambda w: _tab(w, titles=TOKEN_TITLES), "ok", 0, "",
         check=lambda w: (expected_sequences(w), _assert_equal(_titles(w)["i1"], "<a_1><b_1>"))),
    # ---- tabular: hostile text is cleaned, with a counted warning ---------------------------------------------
    Case("tab-hostile-titles", lambda w: _tab(w, titles=HOSTILE), "warn", 0, r"3 item\(s\) have control characters",
         check=lambda w: _assert_equal(_titles(w), {**TITLES, "i1": "Pipette", "i2": "Gloves", "i3": "Glasses"})),
    # ---- tabular: broken files --------------------------------------------------------------------------------
    Case("tab-empty-file", lambda w: _prep(w, _replace(_tabular(w), "interactions.csv", b""), "--format", "tabular"),
         "error", 1, r"interactions\.csv is empty", check=_no_output),
    Case("tab-header-only", lambda w: _tab(w, rows=[]), "error", 1, r"(no user is left|empty)"),
    Case("tab-wrong-columns", lambda w: _tab(w, header="uid,iid,ts"), "error", 1,
         r"interactions\.csv: column\(s\) .*user_id.* not found.*the file has \['uid', 'iid', 'ts'\]"),
    Case("tab-column-flag-fixes-it", lambda w: _tab(w, "--user_column", "uid", "--item_column", "iid",
                                                     "--time_column", "ts", header="uid,iid,ts"), "ok", 0, "",
         check=expected_sequences),
    Case("tab-extra-field", lambda w: _tab(w, rows=[*LOG_ROWS, ("u1", "i4", 50, "EXTRA")]), "error", 1,
         r"interactions\.csv: malformed line .*line 12"),
    Case("tab-latin1", lambda w: _tab(w, titles={**TITLES, "i2": "Gl\u00f6ves"}, encoding="latin-1"), "error", 1,
         r"items\.csv: not valid UTF-8"),
    Case("tab-utf16", lambda w: _tab(w, encoding="utf-16"), "error", 1, r"(interactions|items)\.csv: not valid UTF-8"),
    Case("tab-binary", lambda w: _prep(w, _replace(_tabular(w), "interactions.csv", bytes(range(256)) * 8),
                                       "--format", "tabular"), "error", 1, r"interactions\.csv"),
    Case("tab-duplicate-item-ids", lambda w: _duplicate_item(w), "error", 1,
         r"items\.csv:6 \(first seen at line 3\): duplicate item id 'i2'"),
    Case("tab-duplicate-item-keep-first", lambda w: _duplicate_item(w, "--duplicate_items", "keep_first"), "ok", 0,
         "", check=lambda w: _assert_equal(_titles(w)["i2"], "Gloves")),
    Case("tab-unknown-item", lambda w: _tab(w, rows=[*LOG_ROWS, ("u1", "i9", 50)]), "error", 1,
         r"item 'i9', which is not in the item catalogue.*unknown_items=drop"),
    Case("tab-unknown-item-dropped", lambda w: _tab(w, "--unknown_items", "drop", rows=[*LOG_ROWS, ("u1", "i9", 50)]),
         "ok", 0, "", check=expected_sequences),
    Case("tab-bad-time", lambda w: _tab(w, rows=[(u, i, "yesterday") for u, i, _ in LOG_ROWS]), "error", 1,
         r"interactions\.csv:2: time 'yesterday' is neither a number nor a date"),
    Case("tab-empty-user-id", lambda w: _tab(w, rows=[("", "i1", 10), *LOG_ROWS[1:]]), "error", 1,
         r"interactions\.csv:2: empty 'user_id'"),
    Case("tab-nul-in-item-id", lambda w: _tab(w, rows=[*LOG_ROWS, ("u1", "i4\x00", 50)]), "error", 1,
         r"item 'i4\\x00', which is not in the item catalogue"),
    Case("tab-no-item-table", lambda w: _prep(w, _unlink(_tabular(w), "items.csv"), "--format", "tabular"), "error",
         1, r"tabular layout needs interactions.* and items"),
    Case("tab-gz-not-gzip", lambda w: _prep(w, _gz(w, truncate=False), "--format", "tabular"), "error", 1,
         r"interactions\.csv\.gz is damaged"),
    Case("tab-gz-truncated", lambda w: _prep(w, _gz(w, truncate=True), "--format", "tabular"), "error", 1,
         r"interactions\.csv\.gz is damaged \(Compressed file ended"),
    Case("tab-parquet-garbage", lambda w: _prep(w, _parquet_garbage(w), "--format", "tabular"), "error", 1,
         r"(interactions|items)\.parquet is not a readable Parquet file"),
    Case("tab-file-without-item-path", lambda w: _prep(w, _tabular(w) / "interactions.csv", "--format", "tabular"),
         "error", 1, r"interactions\.csv: a tabular interaction file needs item_path"),
    Case("data-stats-empty-file", lambda w: ["data", "stats", str(_replace(_tabular(w), "interactions.csv", b"")),
                                             "--format", "tabular"], "error", 1, r"interactions\.csv is empty"),
    Case("data-stats-unknown-layout", lambda w: ["data", "stats", str(_unlink(_tabular(w), "items.csv"))], "error", 1,
         r"tab matches no known layout"),
    # ---- LC-Rec JSON --------------------------------------------------------------------------------------------
    Case("lcrec-bom", lambda w: _prep(w, _lcrec(w, inter=b"\xef\xbb\xbf" + json.dumps(EXPECTED).encode())), "ok", 0,
         "", check=expected_sequences),
    Case("lcrec-crlf", lambda w: _prep(w, _lcrec(w, items=json.dumps(ITEMS, indent=1).replace("\n", "\r\n")
                                                 .encode())), "ok", 0, "", check=expected_sequences),
    Case("lcrec-empty-inter", lambda w: _prep(w, _lcrec(w, inter=b"")), "error", 1,
         r"Tiny\.inter\.json:1: malformed JSON", check=_no_output),
    Case("lcrec-inter-is-list", lambda w: _prep(w, _lcrec(w, inter=b'[["i1", "i2"]]')), "error", 1,
         r"Tiny\.inter\.json: expected a JSON object keyed by user id, got list"),
    Case("lcrec-inter-is-null", lambda w: _prep(w, _lcrec(w, inter=b"null")), "error", 1,
         r"Tiny\.inter\.json: expected a JSON object keyed by user id, got NoneType"),
    Case("lcrec-user-maps-to-string", lambda w: _prep(w, _lcrec(w, inter=json.dumps({**EXPECTED, "u1": "i1 i2"})
                                                               .encode())), "error", 1,
         r"Tiny\.inter\.json: user 'u1' maps to str, expected a list of item ids"),
    Case("lcrec-duplicate-user", lambda w: _prep(w, _lcrec(w, inter=b'{"u1": ["i1"], "u1": ["i2"]}')), "error", 1,
         r"Tiny\.inter\.json:1: duplicate user id 'u1'"),
    Case("lcrec-item-is-string", lambda w: _prep(w, _lcrec(w, items=json.dumps({**ITEMS, "i2": "Gloves"}).encode())),
         "error", 1, r"Tiny\.item\.json: item 'i2' is str, expected an object"),
    Case("lcrec-items-binary", lambda w: _prep(w, _lcrec(w, items=bytes(range(128, 256)) * 4)), "error", 1,
         r"Tiny\.item\.json: not valid UTF-8"),
    Case("lcrec-items-utf16", lambda w: _prep(w, _lcrec(w, items=json.dumps(ITEMS).encode("utf-16"))), "error", 1,
         r"Tiny\.item\.json: not valid UTF-8"),
    Case("lcrec-no-item-file", lambda w: _prep(w, _unlink(_lcrec(w), "Tiny.item.json")), "error", 1,
         r"src matches no known layout.*Found: \['Tiny\.inter\.json'\]"),
    Case("lcrec-ansi-nul-bidi", lambda w: _prep(w, _lcrec(w, items=_items_json(
        i1={"title": "a\x00b\x1b[31m"}, i2={"brand": "x\u202ey"}))), "warn", 0,
         r"1 item\(s\) have control characters .* in their (title|brand)",
         check=lambda w: _assert_equal(_titles(w)["i1"], "ab")),
    Case("lcrec-token-strings-kept-as-text", lambda w: _prep(w, _lcrec(w, items=_items_json(
        i1={"title": "<a_1><b_1> <|im_end|>"}))), "ok", 0, "",
         check=lambda w: _assert_equal(_titles(w)["i1"], "<a_1><b_1> <|im_end|>")),
    Case("lcrec-huge-title", lambda w: _prep(w, _lcrec(w, items=_items_json(i1={"title": "x " * 50000}))), "ok", 0, "",
         check=expected_sequences),
    Case("lcrec-wrong-format-flag", lambda w: _prep(w, _lcrec(w), "--format", "movielens"), "error", 1,
         r"MovieLens layout needs ratings\.dat and movies\.dat"),
    Case("lcrec-wrong-name", lambda w: _prep(w, _lcrec(w), "--name", "Other"), "error", 1,
         r"Name='Other', found \['Tiny\.inter\.json'\]"),
]


def _assert_equal(got, want) -> None:
    assert got == want, (got, want)


def _unlink(folder: Path, name: str) -> Path:
    (folder / name).unlink()
    return folder


def _duplicate_item(ws: Workspace, *extra: str) -> list[str]:
    """The tabular source with item i2 listed twice in items.csv (line 6 repeats line 3)."""
    folder = _tabular(ws)
    with open(folder / "items.csv", "a", encoding="utf-8") as f:
        f.write("i2,Gloves again\n")
    return _prep(ws, folder, "--format", "tabular", *extra)
