"""The bad-input table: what a new user gets wrong, run through the real CLI (``alignrec.cli.main``) on tiny data.

Each ``Case`` builds its broken input in a fresh folder, runs one command in-process and says what a careful
user expects: an ``error`` (exit code, ONE stderr line ``alignrec <command>: error: ...`` matching ``match``, no
traceback), a ``warn`` (exit 0 and a logged warning matching ``match``, e.g. with the count) or ``ok`` (a correct
accept: exit 0 and ``check`` finds the right output, e.g. a CSV with a byte-order mark read as without one). An
optional ``check`` also runs after an error (e.g. nothing half-written, no user file touched).

The cases live in this module (the first round) and in ``bad_inputs_data`` (data files), ``bad_inputs_configs``
(config files, flags, devices) and ``bad_inputs_folders`` (tokenizer / model / vocab / embedding folders and the
remaining subcommands); ``bad_inputs_http`` holds the HTTP service's. ``all_cases()`` gathers them.

``python -m tests.cli.bad_inputs`` runs the table and prints the census (clear / accepted / unclear / traceback /
silent) that issues 11 and 33 report before and after.

Over 400 lines because it is one table (a ``Case`` per bad input, each a few lines): split by command it would
lose the one census that the table exists for.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.recdata.recdata_sources import EXPECTED, ITEMS, write_lcrec

FOUR_IDS = ["i1", "i2", "i3", "i4"]  # the catalogue after data prepare (i5 is unused and pruned)
TOKENIZE_FAST = ["--align_weight", "0", "--rq_epochs", "2", "--num_levels", "2", "--codebook_size", "4",
                 "--rq_batch_size", "4", "--kmeans_init", "false", "--use_cache", "false"]


@dataclass
class Workspace:
    """Shared, read-only artefacts (built once) plus a fresh folder ``case`` per case."""

    root: Path
    src: Path  # LC-Rec JSON source (4 used items, 1 unused)
    split: Path  # `data prepare` output
    vectors: Path  # [4, 8] float32 item vectors for `--source file`
    ids: Path  # their ids, one per line
    tok: Path  # `tokenize` output
    vocab: Path  # `vocab export` output
    case: Path = Path()

    def fresh(self, name: str) -> Workspace:
        case = self.root / "cases" / name
        shutil.rmtree(case, ignore_errors=True)
        case.mkdir(parents=True)
        return Workspace(self.root, self.src, self.split, self.vectors, self.ids, self.tok, self.vocab, case)

    def file_args(self, vectors: Path | None = None, ids: Path | None = None) -> list[str]:
        return ["--source", "file", "--file_path", str(vectors or self.vectors), "--file_ids_path", str(ids or self.ids)]


@dataclass
class Case:
    id: str
    argv: Callable[[Workspace], list[str]]
    expect: str  # "error" | "warn" | "ok"
    code: int  # expected exit status (0 for warn and ok)
    match: str  # regex the error line / a warning must contain (names the file / item / key); ok: unused
    setup: Callable[[Workspace], None] | None = None
    check: Callable[[Workspace], None] | None = None  # asserts on the outputs after the command (ok: required)


@dataclass
class Outcome:
    code: int | None
    stderr: str
    warnings: list[str]
    traceback: str
    check_failed: str = ""  # what ``Case.check`` found wrong ("" when it passed or there is none)


def run_cli(argv: list[str]) -> Outcome:
    """``alignrec.cli.main(argv)`` in-process: exit code, stderr, WARNING+ log lines, escaped traceback."""
    from alignrec.cli import main

    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                records.append(record.getMessage())

    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    err = io.StringIO()
    code: int | None = None
    tb = ""
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int) and exc.code is not None:
                    err.write(str(exc.code) + "\n")
    except Exception:  # the census counts what escapes main() as a raw traceback
        tb = traceback.format_exc()
    finally:
        root.removeHandler(handler)
    return Outcome(code, err.getvalue(), records, tb)


PROGRESS = re.compile(r"\d+%\||\d+/\d+ \[")  # tqdm bars (datasets' "Saving the dataset", RQ-VAE epochs)


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines that are not progress bars."""
    lines = (part for line in stderr.splitlines() for part in line.split("\r"))
    return [line for line in lines if line.strip() and not PROGRESS.search(line)]


ERROR_LINE = re.compile(r"alignrec( [\w -]+)?: error: ")  # `alignrec: error:` for the top-level parser


def classify(case: Case, out: Outcome) -> str:
    """clear | accepted | unclear | traceback | silent (see module docstring)."""
    if out.traceback:
        return "traceback"
    if out.check_failed:
        return "silent"  # a wrong output accepted, or a failure that touched what it must not
    lines = error_lines(out.stderr)
    if out.code not in (0, None):
        one_line = len(lines) == 1 and ERROR_LINE.match(lines[0]) is not None
        named = any(re.search(case.match, line) for line in lines)
        return "clear" if one_line and named and case.expect == "error" else "unclear"
    if case.expect == "ok":
        return "accepted" if case.check is not None else "silent"
    if any(re.search(case.match, w) for w in out.warnings):
        return "clear" if case.expect == "warn" else "silent"
    return "silent"


# ---- case builders -------------------------------------------------------------------------------------------
def src_with(ws: Workspace, inter: dict | None = None, items: dict | None = None, raw_items: bytes | None = None) -> Path:
    src = write_lcrec(ws.case / "src")
    if inter is not None:
        (src / "Tiny.inter.json").write_text(json.dumps(inter))
    if items is not None:
        (src / "Tiny.item.json").write_text(json.dumps(items))
    if raw_items is not None:
        (src / "Tiny.item.json").write_bytes(raw_items)
    return src


def prepare_argv(src: str | Path, out: str | Path, *extra: str) -> list[str]:
    return ["data", "prepare", "--path", str(src), "--output_dir", str(out), *extra]


def yaml_file(ws: Workspace, text: str, name: str = "c.yaml") -> str:
    path = ws.case / name
    path.write_text(text)
    return str(path)


def npy_file(ws: Workspace, array: np.ndarray, name: str = "v.npy", allow_pickle: bool = False) -> Path:
    path = ws.case / name
    np.save(path, array, allow_pickle=allow_pickle)
    return path


def id_file(ws: Workspace, ids: list[str], name: str = "ids.txt") -> Path:
    path = ws.case / name
    path.write_text("".join(i + "\n" for i in ids))
    return path


def embed_argv(ws: Workspace, vectors: Path | None = None, ids: Path | None = None, out: Path | None = None) -> list[str]:
    return ["embed", "--split_dir", str(ws.split), "--output_dir", str(out or ws.case / "emb"),
            *ws.file_args(vectors, ids), "--use_cache", "false"]


def tokenize_argv(ws: Workspace, *extra: str, vectors: Path | None = None) -> list[str]:
    return ["tokenize", "--split_dir", str(ws.split), "--output_dir", str(ws.case / "tok"), *ws.file_args(vectors),
            *TOKENIZE_FAST, *extra]


def tasks_argv(ws: Workspace, *extra: str, split: Path | None = None) -> list[str]:
    return ["tasks", "build", "--split_dir", str(split or ws.split), "--item_tokenizer_dir", str(ws.tok),
            "--hf_tokenizer_dir", "codes_only", "--output_dir", str(ws.case / "tasks"), "--stats_sample", "0", *extra]


def _old_json_store(ws: Workspace) -> Path:
    """A serving store as an earlier alignrec published it: rows as JSON text, no catalogue, no row format."""
    import sqlite3

    store = ws.case / "store"
    (store / "versions").mkdir(parents=True)
    with sqlite3.connect(store / "versions" / "v-old.sqlite") as con:
        con.executescript("CREATE TABLE recs (user_id TEXT PRIMARY KEY, items TEXT NOT NULL) WITHOUT ROWID;"
                          "CREATE TABLE fallback (rank INTEGER PRIMARY KEY, item_id TEXT NOT NULL, score REAL NOT NULL);"
                          "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;")
        con.execute("INSERT INTO recs VALUES ('u1', ?)", [json.dumps([["i1", 1.0]])])
        con.execute("INSERT INTO meta VALUES ('k', '1')")
    (store / "CURRENT").write_text("v-old.sqlite\n")
    return store


def foreign_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    return folder


def _copy_vocab(ws: Workspace) -> Path:
    out = ws.case / "vocab"
    shutil.copytree(ws.vocab, out)
    return out


def _drop_manifest_files(ws: Workspace) -> None:
    vocab = _copy_vocab(ws)
    manifest = json.loads((vocab / "manifest.json").read_text())
    del manifest["files"]
    (vocab / "manifest.json").write_text(json.dumps(manifest))


def _dataset_missing_item(ws: Workspace) -> None:
    """A prepared dataset whose catalogue lacks i4 (the vocab export has codes for i1..i4)."""
    inter = {"u1": ["i1", "i2", "i3"], "u2": ["i2", "i3", "i1"], "u3": ["i3", "i2", "i1"]}
    from alignrec.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        main(prepare_argv(src_with(ws, inter=inter), ws.case / "ds3"))


def _split_with_blank_title(ws: Workspace) -> None:
    items = {k: dict(v) for k, v in ITEMS.items()}
    items["i1"]["title"] = ""
    items["i2"]["title"] = "  "
    from alignrec.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        main(prepare_argv(src_with(ws, items=items), ws.case / "split_blank"))


def run_yaml_argv(ws: Workspace, sections: str) -> list[str]:
    data = f"name: t\nruns_dir: {ws.case / 'runs'}\ndata:\n  path: {ws.src}\n{sections}"
    return ["run", "--config", yaml_file(ws, data, "run.yaml")]


def _items_with(key: str, value) -> dict:
    items = {k: dict(v) for k, v in ITEMS.items()}
    items[key]["title"] = value
    return items


TITLE_DICT = _items_with("i2", {"a": 1})
TITLE_NUMBER_LIST = _items_with("i3", [1, 2])
NO_TITLE = _items_with("i1", "")
LATIN1_ITEMS = json.dumps(ITEMS).replace("Gloves", "Gl\u00f6ves").encode("latin-1")
NESTED = {**EXPECTED, "u1": [["1", "2"], "i1", "i3", "i2"]}
WITH_NULL = {**EXPECTED, "u1": [None, "i1", "i3", "i2"]}
UNKNOWN_ITEM = {**EXPECTED, "u1": ["i1", "i3", "i2", "i9"]}
IDENTICAL = np.ones((4, 8), dtype=np.float32)

CASES: list[Case] = [
    # ---- data prepare / stats --------------------------------------------------------------------------------
    Case("data-missing-path", lambda w: prepare_argv(w.case / "nope", w.case / "out"), "error", 1, r"nope"),
    Case("data-nested-list", lambda w: prepare_argv(src_with(w, inter=NESTED), w.case / "out"), "error", 1,
         r"Tiny\.inter\.json.*u1.*(list|position)"),
    Case("data-null-in-list", lambda w: prepare_argv(src_with(w, inter=WITH_NULL), w.case / "out"), "error", 1,
         r"Tiny\.inter\.json.*u1.*position 0.*null"),
    Case("data-latin1-bytes", lambda w: prepare_argv(src_with(w, raw_items=LATIN1_ITEMS), w.case / "out"), "error", 1,
         r"Tiny\.item\.json.*UTF-8"),
    Case("data-title-dict", lambda w: prepare_argv(src_with(w, items=TITLE_DICT), w.case / "out"), "warn", 0,
         r"1 item.*title.*not (a )?(string|text)"),
    Case("data-title-list-of-numbers", lambda w: prepare_argv(src_with(w, items=TITLE_NUMBER_LIST), w.case / "out"),
         "warn", 0, r"1 item.*title.*not (a )?(string|text)"),
    Case("data-no-title", lambda w: prepare_argv(src_with(w, items=NO_TITLE), w.case / "out"), "warn", 0,
         r"1 item.* no title"),
    Case("data-unknown-item", lambda w: prepare_argv(src_with(w, inter=UNKNOWN_ITEM), w.case / "out"), "error", 1,
         r"i9"),
    Case("data-malformed-json", lambda w: prepare_argv(src_with(w, raw_items=b'{"i1": {"title" "x"}}'), w.case / "o"),
         "error", 1, r"Tiny\.item\.json:1: malformed JSON"),
    Case("data-yaml-float-for-int", lambda w: prepare_argv(w.src, w.case / "out", "--config", yaml_file(w, "kcore: 2.5\n")),
         "error", 2, r"kcore"),
    Case("data-yaml-unknown-key", lambda w: prepare_argv(w.src, w.case / "out", "--config", yaml_file(w, "kcor: 5\n")),
         "error", 2, r"kcor"),
    Case("data-yaml-not-mapping", lambda w: prepare_argv(w.src, w.case / "out", "--config", yaml_file(w, "- a\n- b\n")),
         "error", 2, r"c\.yaml"),
    Case("data-yaml-syntax", lambda w: prepare_argv(w.src, w.case / "out", "--config", yaml_file(w, "kcore: [1\n")),
         "error", 2, r"c\.yaml"),
    Case("data-config-missing", lambda w: prepare_argv(w.src, w.case / "out", "--config", str(w.case / "no.yaml")),
         "error", 2, r"no\.yaml"),
    Case("data-flag-bad-choice", lambda w: prepare_argv(w.src, w.case / "out", "--split", "random"), "error", 2,
         r"split.*random"),
    Case("data-flag-not-int", lambda w: prepare_argv(w.src, w.case / "out", "--kcore", "x"), "error", 2, r"kcore"),
    Case("data-yaml-bad-choice", lambda w: prepare_argv(w.src, w.case / "out", "--config", yaml_file(w, "format: csvv\n")),
         "error", 2, r"format.*csvv"),
    Case("data-temporal-ratios", lambda w: prepare_argv(w.src, w.case / "out", "--temporal_ratios", "0.5", "0.5"),
         "error", 2, r"temporal_ratios"),
    Case("data-all-filtered", lambda w: prepare_argv(w.src, w.case / "out", "--min_user_interactions", "9"), "error", 1,
         r"no user is left"),
    Case("data-output-is-input", lambda w: prepare_argv(shutil.copytree(w.src, w.case / "d"), w.case / "d"), "error", 1,
         r"input"),
    Case("data-output-inside-input", lambda w: prepare_argv(shutil.copytree(w.src, w.case / "d"), w.case / "d" / "o"),
         "error", 1, r"inside"),
    Case("data-output-foreign", lambda w: prepare_argv(w.src, foreign_folder(w.case / "out")), "error", 1,
         r"out.*not written by alignrec"),
    Case("data-stats-missing", lambda w: ["data", "stats", str(w.case / "nope")], "error", 1, r"nope"),
    Case("data-missing-required", lambda w: ["data", "prepare", "--path", str(w.src)], "error", 2, r"output_dir"),
    # ---- embed -----------------------------------------------------------------------------------------------
    Case("embed-output-is-split", lambda w: embed_argv(_own_split(w), out=w.split), "error", 1, r"input"),
    Case("embed-output-foreign", lambda w: embed_argv(w, out=foreign_folder(w.case / "emb")), "error", 1,
         r"not written by alignrec"),
    Case("embed-missing-split", lambda w: ["embed", "--split_dir", str(w.case / "nope"), "--output_dir",
                                           str(w.case / "e"), *w.file_args()], "error", 1, r"nope"),
    Case("embed-string-npy", lambda w: embed_argv(w, npy_file(w, np.array([["a"] * 8] * 4))), "error", 1,
         r"v\.npy.*(dtype|numbers)"),
    Case("embed-object-npy", lambda w: embed_argv(w, npy_file(w, np.array([[1, "a"]] * 4, dtype=object),
                                                       allow_pickle=True)), "error", 1, r"v\.npy"),
    Case("embed-truncated-npy", lambda w: embed_argv(w, _truncated(w)), "error", 1, r"v\.npy"),
    Case("embed-huge-vectors", lambda w: embed_argv(w, npy_file(w, np.full((4, 8), 3e38, dtype=np.float32))), "error", 1,
         r"v\.npy.*(large|overflow)"),
    Case("embed-nan-vector", lambda w: embed_argv(w, npy_file(w, _with_nan())), "error", 1, r"v\.npy.*i3"),
    Case("embed-ids-too-few", lambda w: embed_argv(w, ids=id_file(w, FOUR_IDS[:3])), "error", 1, r"ids\.txt"),
    Case("embed-ids-duplicate", lambda w: embed_argv(w, ids=id_file(w, ["i1", "i2", "i2", "i4"])), "error", 1, r"'i2'"),
    Case("embed-ids-unknown", lambda w: embed_argv(w, ids=id_file(w, ["i1", "i2", "i3", "zz"])), "error", 1, r"zz"),
    Case("embed-3d-array", lambda w: embed_argv(w, npy_file(w, np.zeros((4, 2, 4), np.float32))), "error", 1, r"v\.npy"),
    Case("embed-missing-file", lambda w: embed_argv(w, w.case / "none.npy"), "error", 1, r"none\.npy"),
    Case("embed-bad-source", lambda w: ["embed", "--split_dir", str(w.split), "--output_dir", str(w.case / "e"),
                                        "--source", "foo"], "error", 2, r"source.*foo"),
    Case("embed-wrong-suffix", lambda w: embed_argv(w, id_file(w, ["x"], "v.txt")), "error", 1, r"v\.txt"),
    # ---- tokenize --------------------------------------------------------------------------------------------
    Case("tok-yaml-float-levels", lambda w: tokenize_argv(w, "--config", yaml_file(w, "num_levels: 3.7\n")), "error", 2,
         r"num_levels.*3\.7"),
    Case("tok-identical-vectors", lambda w: tokenize_argv(w, vectors=npy_file(w, IDENTICAL)), "warn", 0,
         r"[34] of 4 items"),
    Case("tok-huge-codebook", lambda w: tokenize_argv(w, "--codebook_size", "256"), "warn", 0, r"512 code tokens for 4 items"),
    Case("tok-zero-levels", lambda w: tokenize_argv(w, "--num_levels", "0"), "error", 2, r"num_levels"),
    Case("tok-output-is-split", lambda w: ["tokenize", "--split_dir", str(_own_split(w).split), "--output_dir",
                                           str(w.split), *w.file_args(), *TOKENIZE_FAST], "error", 1, r"input"),
    Case("tok-missing-split", lambda w: ["tokenize", "--split_dir", str(w.case / "nope"), "--output_dir",
                                         str(w.case / "t")], "error", 1, r"nope"),
    # ---- tasks -----------------------------------------------------------------------------------------------
    Case("tasks-missing-tokenizer", lambda w: ["tasks", "build", "--split_dir", str(w.split), "--item_tokenizer_dir",
                                               str(w.case / "nope"), "--hf_tokenizer_dir", "codes_only",
                                               "--output_dir", str(w.case / "t")], "error", 1, r"nope"),
    Case("tasks-output-foreign", lambda w: tasks_argv(w) if foreign_folder(w.case / "tasks") else [], "error", 1,
         r"not written by alignrec"),
    Case("tasks-output-is-split", lambda w: [*tasks_argv(_own_split(w))[:-4], "--output_dir", str(w.split)], "error", 1,
         r"input"),
    Case("tasks-bad-weights", lambda w: tasks_argv(w, "--weights", '{"foo": 1}'), "error", 2, r"foo"),
    Case("tasks-missing-query-file", lambda w: tasks_argv(w, "--query_file", str(w.case / "q.json")), "error", 1,
         r"q\.json"),
    Case("tasks-blank-titles", lambda w: tasks_argv(w, split=w.case / "split_blank"), "warn", 0, r"2 item.* no title",
         setup=_split_with_blank_title),
    # ---- vocab -----------------------------------------------------------------------------------------------
    Case("vocab-extra-items", lambda w: ["vocab", "validate", str(w.vocab), "--dataset_dir", str(w.case / "ds3")],
         "error", 1, r"i4", setup=_dataset_missing_item),
    Case("vocab-manifest-no-files", lambda w: ["vocab", "validate", str(w.case / "vocab")], "error", 1,
         r"manifest\.json.*files", setup=_drop_manifest_files),
    Case("vocab-validate-missing", lambda w: ["vocab", "validate", str(w.case / "nope")], "error", 1, r"nope"),
    Case("vocab-export-foreign", lambda w: ["vocab", "export", "--tokenizer_dir", str(w.tok), "--output_dir",
                                            str(foreign_folder(w.case / "v")), "--hf_tokenizer_dir", "none"], "error", 1,
         r"not written by alignrec"),
    Case("vocab-export-into-tokenizer", lambda w: ["vocab", "export", "--tokenizer_dir", str(_own_tok(w)),
                                                   "--output_dir", str(w.tok / "x"), "--hf_tokenizer_dir", "none"],
         "error", 1, r"inside"),
    Case("vocab-export-missing-tok", lambda w: ["vocab", "export", "--tokenizer_dir", str(w.case / "nope"),
                                                "--output_dir", str(w.case / "v"), "--hf_tokenizer_dir", "none"],
         "error", 1, r"nope"),
    # ---- evaluate / cache / train ----------------------------------------------------------------------------
    Case("eval-beams-below-k", lambda w: ["evaluate", "--model_dir", str(w.case), "--split_dir", str(w.split),
                                          "--out_dir", str(w.case / "e"), "--num_beams", "5"], "error", 2, r"num_beams"),
    Case("eval-bad-part", lambda w: ["evaluate", "--model_dir", str(w.case), "--split_dir", str(w.split), "--out_dir",
                                     str(w.case / "e"), "--part", "train"], "error", 2, r"part"),
    Case("eval-missing-model", lambda w: ["evaluate", "--model_dir", str(w.case / "nope"), "--split_dir", str(w.split),
                                          "--out_dir", str(w.case / "e")], "error", 1, r"nope"),
    Case("cache-unknown-user", lambda w: ["cache", "build", "--split_dir", str(w.split), "--out_dir",
                                          str(w.case / "c"), "--recommender", "popularity", "--k", "2", "--users_file",
                                          str(id_file(w, ["u1", "ghost"], "users.txt"))], "error", 1, r"ghost"),
    Case("cache-output-foreign", lambda w: ["cache", "build", "--split_dir", str(w.split), "--out_dir",
                                            str(foreign_folder(w.case / "c")), "--recommender", "popularity", "--k", "2"],
         "error", 1,
         r"c\b"),
    Case("cache-get-missing-store", lambda w: ["cache", "get", "u1", "--store_dir", str(w.case / "nope")], "error", 1,
         r"nope"),
    Case("cache-get-no-user", lambda w: ["cache", "get", "--store_dir", str(w.case)], "error", 2, r"USER id"),
    Case("cache-get-old-json-store", lambda w: ["cache", "get", "u1", "--store_dir", str(_old_json_store(w))], "error",
         1, r"v-old\.sqlite holds rows in the older JSON format.*republish"),
    Case("cache-publish-bad-score-dtype", lambda w: ["cache", "publish", "--cache_dir", str(w.case), "--store_dir",
                                                     str(w.case / "s"), "--score_dtype", "bfloat16"], "error", 2,
         r"score_dtype"),
    Case("serve-token-with-space", lambda w: ["serve", "--store_dir", str(w.case), "--token", "two words"], "error", 2,
         r"token must be a non-empty string without spaces"),
    Case("train-bad-mode", lambda w: ["train", "--dry_run", "--dataset_dir", str(w.case), "--output_dir",
                                      str(w.case / "m"), "--finetune_mode", "lorra"], "error", 2, r"lorra"),
    # ---- run -------------------------------------------------------------------------------------------------
    Case("run-finetune-lorra", lambda w: run_yaml_argv(w, "train:\n  finetune_mode: lorra\n"), "error", 2, r"lorra"),
    Case("run-float-levels", lambda w: run_yaml_argv(w, "tokenizer:\n  num_levels: 3.7\n"), "error", 2, r"num_levels"),
    Case("run-unknown-top-key", lambda w: run_yaml_argv(w, "tokeniser:\n  num_levels: 3\n"), "error", 2, r"tokeniser"),
    Case("run-injected-key", lambda w: run_yaml_argv(w, "tasks:\n  split_dir: x\n"), "error", 2, r"split_dir"),
    Case("run-bad-from", lambda w: [*run_yaml_argv(w, ""), "--from", "nope"], "error", 2, r"nope"),
    Case("run-missing-config", lambda w: ["run", "--config", str(w.case / "no.yaml")], "error", 2, r"no\.yaml"),
    Case("scenarios-extract-no-labels", lambda w: ["scenarios", "extract", "--split_dir", str(w.split), "--out_dir",
                                                   str(w.case / "k")], "error", 1, r"no scenario labels"),
    Case("scenarios-train-no-vectors", lambda w: ["scenarios", "train", "--split_dir", str(w.split), "--out_dir",
                                                  str(w.case / "m")], "error", 2, r"vectors_dir"),
    Case("run-llm4msr-unknown-key", lambda w: run_yaml_argv(w, "evaluate:\n  llm4msr:\n    user_smaple: 3\n"), "error", 2,
         r"user_smaple"),
]


# ---- issue 33: provenance, OS errors at the boundary, silent values, unclear messages -----------------------
def under_file(ws: Workspace, name: str = "out") -> Path:
    """An output path whose parent is a regular file (NotADirectoryError, whoever runs the test: root too)."""
    blocker = ws.case / "blocker"
    blocker.write_text("a file, not a folder\n")
    return blocker / name


def _damaged_tok(ws: Workspace, text: str = '{"files": {"codes.jsonl": "ab') -> Path:
    tok = Path(shutil.copytree(ws.tok, ws.case / "tok_damaged"))
    (tok / "manifest.json").write_text(text)
    return tok


def quiet_main(argv: list[str]) -> None:
    from alignrec.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code:
        raise RuntimeError(f"setup step failed ({code}): {argv}")


def pop_cache(ws: Workspace, out: Path | None = None, *extra: str) -> Path:
    out = out or ws.case / "cache"
    quiet_main(["cache", "build", "--recommender", "popularity", "--split_dir", str(ws.split), "--out_dir", str(out),
                 "--k", "2", *extra])
    return out


def _split_using_uncoded(ws: Workspace) -> None:
    """A split whose users also buy i5 (the tokenizer has codes for i1..i4 only)."""
    inter = {**EXPECTED, "u1": ["i1", "i3", "i2", "i5"], "u2": [*EXPECTED["u2"], "i5"]}
    quiet_main(prepare_argv(src_with(ws, inter=inter), ws.case / "ds5"))


def _tasks_of_other_tokenizer(ws: Workspace) -> None:
    tasks = ws.case / "tasks_other"
    tasks.mkdir()
    (tasks / "tasks_manifest.json").write_text(json.dumps({"prompt_format": "chat", "item_tokenizer_hash": "0" * 64}))
    (tasks / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))


def _fake_run_with_tok(ws: Workspace) -> None:
    """A run folder whose item_tokenizer/ holds the shared codes (i1..i4): enough for the provenance check."""
    shutil.copytree(ws.tok, ws.case / "run" / "item_tokenizer")


def train_argv(ws: Workspace, dataset: Path, *extra: str) -> list[str]:
    return ["train", "--dataset_dir", str(dataset), "--item_tokenizer_dir", str(ws.tok), "--output_dir",
            str(ws.case / "m"), *extra]


def vocab_export_argv(ws: Workspace, tok: Path | None = None, out: Path | None = None) -> list[str]:
    return ["vocab", "export", "--tokenizer_dir", str(tok or ws.tok), "--output_dir", str(out or ws.case / "v"),
            "--hf_tokenizer_dir", "none"]


def cache_build_argv(ws: Workspace, *extra: str) -> list[str]:
    return ["cache", "build", "--recommender", "popularity", "--split_dir", str(ws.split), "--out_dir",
            str(ws.case / "c"), *extra]


DEAD = "redis://127.0.0.1:1/0"  # port 1: nothing listens, the connection is refused at once

CASES += [
    # ---- 9: unknown flags name the flag and the close match (or the valid flags) ----------------------------
    Case("data-unknown-flag", lambda w: [*prepare_argv(w.src, w.case / "o"), "--output_dirr", "x"], "error", 2,
         r"--output_dirr.*did you mean --output_dir\?"),
    Case("data-unknown-flag-no-match", lambda w: [*prepare_argv(w.src, w.case / "o"), "--zzzz", "1"], "error", 2,
         r"--zzzz.*valid flags: .*--kcore"),
    Case("data-stray-value", lambda w: [*prepare_argv(w.src, w.case / "o"), "stray"], "error", 2,
         r"unexpected argument.*stray"),
    Case("data-yaml-key-close-match", lambda w: prepare_argv(w.src, w.case / "o", "--config", yaml_file(w, "kcor: 5\n")),
         "error", 2, r"kcor: did you mean kcore"),
    Case("embed-unknown-flag", lambda w: [*embed_argv(w), "--fileids_path", "x"], "error", 2,
         r"--fileids_path.*did you mean --file_ids_path"),
    Case("tok-unknown-flag", lambda w: tokenize_argv(w, "--numlevels", "2"), "error", 2,
         r"--numlevels.*did you mean --num_levels"),
    Case("tasks-unknown-flag", lambda w: tasks_argv(w, "--item_tokeniser_dir", "x"), "error", 2,
         r"--item_tokeniser_dir.*did you mean --item_tokenizer_dir"),
    Case("vocab-export-unknown-flag", lambda w: [*vocab_export_argv(w), "--tokeniser_dir", "x"], "error", 2,
         r"--tokeniser_dir.*did you mean --tokenizer_dir"),
    Case("eval-unknown-flag", lambda w: ["evaluate", "--modeldir", str(w.case), "--split_dir", str(w.split)],
         "error", 2, r"--modeldir.*did you mean --model_dir"),
    Case("cache-build-unknown-flag", lambda w: [*cache_build_argv(w), "--topk", "5"], "error", 2, r"--topk"),
    Case("cache-get-unknown-flag", lambda w: ["cache", "get", "u1", "--stor_dir", str(w.case)], "error", 2,
         r"--stor_dir.*did you mean --store_dir"),
    Case("cache-publish-unknown-flag", lambda w: ["cache", "publish", "--cache_dir", str(w.case), "--store_dir",
                                                  str(w.case / "s"), "--fallbackk", "3"], "error", 2,
         r"--fallbackk.*did you mean --fallback_k"),
    Case("train-unknown-flag", lambda w: ["train", "--dry_run", *train_argv(w, w.case)[1:], "--dataset_dirr", "x"],
         "error", 2, r"--dataset_dirr.*did you mean --dataset_dir"),
    Case("run-unknown-flag", lambda w: [*run_yaml_argv(w, ""), "--dryrun"], "error", 2, r"--dryrun.*did you mean --dry_run"),
    # ---- 9: wrong folders name the flag, the value and the fix ---------------------------------------------
    Case("tasks-hf-tokenizer-missing", lambda w: [*tasks_argv(w)[:6], "--hf_tokenizer_dir", str(w.case / "nope"),
                                                  *tasks_argv(w)[8:]], "error", 1,
         r"--hf_tokenizer_dir .*nope: no such folder"),
    Case("tasks-hf-tokenizer-not-a-tokenizer", lambda w: [*tasks_argv(w)[:6], "--hf_tokenizer_dir",
                                                          str(foreign_folder(w.case / "hf")), *tasks_argv(w)[8:]], "error", 1,
         r"--hf_tokenizer_dir .*hf holds no loadable tokenizer"),
    Case("eval-model-not-a-folder", lambda w: ["evaluate", "--model_dir", str(w.case / "nope"), "--split_dir",
                                               str(w.split), "--out_dir", str(w.case / "e")], "error", 1,
         r"nope: no such folder; pass the output_dir of `alignrec train`"),
    Case("cache-build-model-missing", lambda w: ["cache", "build", "--model_dir", str(w.case / "nope"), "--split_dir",
                                                 str(w.split), "--out_dir", str(w.case / "c"), "--k", "2"], "error", 1,
         r"--model_dir .*nope is not a trained run folder"),
    Case("cache-build-ray-dead-address", lambda w: [*cache_build_argv(w, "--k", "2"), "--engine", "ray", "--ray_address",
                                                    "127.0.0.1:1"], "error", 1,
         r"(--ray_address 127\.0\.0\.1:1: nothing answers|ray extra)"),
    Case("train-missing-dataset-dir", lambda w: train_argv(w, w.case / "nope"), "error", 1,
         r"dataset_dir=.*nope does not exist"),
    # ---- 4: OS errors at the boundary: one line naming the path and the fix --------------------------------
    Case("data-output-under-file", lambda w: prepare_argv(w.src, under_file(w)), "error", 1,
         r"blocker.*(ENOTDIR|EEXIST|not a folder|a file)"),
    Case("embed-output-under-file", lambda w: embed_argv(w, out=under_file(w)), "error", 1, r"blocker"),
    Case("tok-output-under-file", lambda w: [*tokenize_argv(w)[:3], "--output_dir", str(under_file(w)),
                                             *tokenize_argv(w)[5:]], "error", 1, r"blocker"),
    Case("tasks-output-under-file", lambda w: [*tasks_argv(w)[:-4], "--output_dir", str(under_file(w)),
                                               "--stats_sample", "0"], "error", 1, r"blocker"),
    Case("vocab-export-under-file", lambda w: vocab_export_argv(w, out=under_file(w)), "error", 1, r"blocker"),
    Case("cache-build-under-file", lambda w: [*cache_build_argv(w, "--k", "2")[:-4], "--out_dir", str(under_file(w)), "--k",
                                              "2"], "error", 1, r"blocker"),
    Case("cache-publish-under-file", lambda w: ["cache", "publish", "--cache_dir", str(pop_cache(w)), "--store_dir",
                                                str(under_file(w))], "error", 1, r"blocker"),
    Case("cache-users-file-is-folder", lambda w: [*cache_build_argv(w, "--k", "2"), "--users_file", str(foreign_folder(w.case / "u"))],
         "error", 1,
         r"EISDIR|folder where a file"),
    Case("tasks-truncated-tok-manifest", lambda w: [*tasks_argv(w)[:5], str(_damaged_tok(w)), *tasks_argv(w)[6:]], "error", 1,
         r"tok_damaged.manifest\.json is not valid JSON.*re-run `alignrec tokenize`"),
    Case("vocab-export-truncated-manifest", lambda w: vocab_export_argv(w, tok=_damaged_tok(w)), "error", 1,
         r"manifest\.json is not valid JSON"),
    Case("tasks-tok-manifest-not-object", lambda w: [*tasks_argv(w)[:5], str(_damaged_tok(w, "[]")), *tasks_argv(w)[6:]],
         "error", 1, r"manifest\.json lacks 'files'"),
    Case("tasks-items-without-codes", lambda w: tasks_argv(w, split=w.case / "ds5"), "error", 1,
         r"catalogue item\(s\) of .*ds5 have no code in .*tok.*i5", setup=_split_using_uncoded),
    Case("cache-base-cache-mismatch", lambda w: cache_build_argv(w, "--k", "3", "--base_cache", str(pop_cache(w, w.case / "b"))),
         "error", 1, r"base cache .*b cannot be refreshed incrementally.*k"),
    Case("cache-publish-redis-refused", lambda w: ["cache", "publish", "--cache_dir", str(pop_cache(w)), "--target",
                                                   DEAD], "error", 1,
         r"Redis at redis://127\.0\.0\.1:1/0.*(refused|ConnectionError)"),
    Case("cache-get-redis-refused", lambda w: ["cache", "get", "u1", "--store_dir", DEAD], "error", 1,
         r"Redis at redis://127\.0\.0\.1:1/0"),
    # ---- 5: values accepted silently before --------------------------------------------------------------
    Case("cache-k-over-catalogue", lambda w: cache_build_argv(w, "--k", "500"), "error", 2,
         r"--k 500 is larger than the 4 items.*--k 4 or less"),
    Case("embed-zero-columns", lambda w: embed_argv(w, npy_file(w, np.zeros((4, 0), np.float32))), "error", 1,
         r"v\.npy.*(column|width|dimension|empty)"),
    Case("tok-zero-columns", lambda w: tokenize_argv(w, vectors=npy_file(w, np.zeros((4, 0), np.float32))), "error", 1,
         r"v\.npy.*(column|width|dimension|empty)"),
    # ---- 2: provenance: every consumer compares what its inputs were built from ---------------------------
    Case("tasks-tok-of-other-catalogue", lambda w: tasks_argv(w, split=w.case / "ds3"), "error", 1,
         r"fitted on another catalogue.*i4", setup=_dataset_missing_item),
    Case("train-tasks-of-other-tokenizer", lambda w: train_argv(w, w.case / "tasks_other"), "error", 1,
         r"tasks_other was built with another item tokenizer", setup=_tasks_of_other_tokenizer),
    Case("cache-build-split-lacks-model-items", lambda w: ["cache", "build", "--model_dir", str(w.case / "run"),
                                                           "--split_dir", str(w.case / "ds3"), "--out_dir",
                                                           str(w.case / "c"), "--k", "2"], "error", 1,
         r"run was fitted on another catalogue.*i4",
         setup=lambda w: (_dataset_missing_item(w), _fake_run_with_tok(w))),
    Case("cache-publish-other-split", lambda w: ["cache", "publish", "--cache_dir", str(pop_cache(w)), "--store_dir",
                                                 str(w.case / "s"), "--split_dir", str(w.case / "ds3")], "error", 1,
         r"ds3 is not the split .*cache was built from", setup=_dataset_missing_item),
]


def _own_split(ws: Workspace) -> Workspace:
    """Point ``ws.split`` at a private copy: a case that may destroy its input must not destroy the shared one."""
    ws.split = Path(shutil.copytree(ws.split, ws.case / "split_copy"))
    return ws


def _own_tok(ws: Workspace) -> Path:
    ws.tok = Path(shutil.copytree(ws.tok, ws.case / "tok_copy"))
    return ws.tok


def _truncated(ws: Workspace) -> Path:
    path = npy_file(ws, np.ones((4, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-20])
    return path


def _with_nan() -> np.ndarray:
    array = np.ones((4, 8), np.float32)
    array[2, 3] = np.nan
    return array


def build_workspace(root: Path) -> Workspace:
    """The shared artefacts every case reads: source, split, vectors, tokenizer, vocab export."""
    from alignrec.cli import main

    root.mkdir(parents=True, exist_ok=True)
    src = write_lcrec(root / "src")
    vectors = root / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32))
    ids = root / "ids.txt"
    ids.write_text("".join(i + "\n" for i in FOUR_IDS))
    ws = Workspace(root, src, root / "split", vectors, ids, root / "tok", root / "vocab")
    with contextlib.redirect_stdout(io.StringIO()):
        for argv in (prepare_argv(src, ws.split),
                     ["tokenize", "--split_dir", str(ws.split), "--output_dir", str(ws.tok), *ws.file_args(),
                      *TOKENIZE_FAST],
                     ["vocab", "export", "--tokenizer_dir", str(ws.tok), "--output_dir", str(ws.vocab),
                      "--hf_tokenizer_dir", "none"]):
            code = main(argv)
            if code:
                raise RuntimeError(f"workspace step failed ({code}): {argv}")
    return ws


def run_case(case: Case, ws: Workspace) -> Outcome:
    ws = ws.fresh(case.id)
    if case.setup is not None:
        case.setup(ws)
    out = run_cli(case.argv(ws))
    if case.check is not None and not out.traceback and (out.code in (0, None)) == (case.expect != "error"):
        try:
            case.check(ws)
        except Exception as exc:  # noqa: BLE001 - an assertion, or an output that is not there at all
            out.check_failed = f"check failed: {type(exc).__name__}: {exc}"
    return out


def all_cases() -> list[Case]:
    """Every CLI case of the table (the HTTP cases are ``bad_inputs_http.HTTP_CASES``)."""
    from tests.cli import bad_inputs_configs, bad_inputs_data, bad_inputs_folders

    return [*CASES, *bad_inputs_data.CASES, *bad_inputs_configs.CASES, *bad_inputs_folders.CASES]


def census(only: str | None = None) -> dict[str, list[str]]:
    """Run every case (CLI and HTTP); {kind: [case ids]}."""
    from tests.cli.bad_inputs_http import run_http_census

    kinds: dict[str, list[str]] = {"clear": [], "accepted": [], "unclear": [], "traceback": [], "silent": []}
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp))
        for case in all_cases():
            if only and only not in case.id:
                continue
            out = run_case(case, ws)
            kind = classify(case, out)
            kinds[kind].append(case.id)
            detail = (out.traceback.strip().splitlines() or [""])[-1] if out.traceback else out.check_failed or \
                " | ".join(error_lines(out.stderr)[-2:]) or "; ".join(out.warnings[-1:])
            print(f"{kind:9s} {case.id:30s} exit={out.code} {detail[:160]}", file=sys.__stdout__, flush=True)
        for case_id, kind, detail in run_http_census(ws, only):
            kinds[kind].append(case_id)
            print(f"{kind:9s} {case_id:30s} {detail[:160]}", file=sys.__stdout__, flush=True)
    return kinds


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    result = census(sys.argv[1] if len(sys.argv) > 1 else None)
    total = sum(len(v) for v in result.values())
    print(f"\n{total} cases: " + ", ".join(f"{k} {len(v)}" for k, v in result.items()), file=sys.__stdout__)
