"""The bad-input table, folders and the remaining subcommands: item tokenizer, vocab export, embeddings and trained
run folders with missing files, truncated JSON or another catalogue; ``assign-codes`` with vectors of the wrong width;
and every subcommand the first round did not reach (sasrec, learn, knowledge, scenarios, tasks queries / requests,
recommend, sasrec-tune, cache get / publish, serve, the top-level parser).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.cli.bad_inputs import (
    FOUR_IDS,
    Case,
    Workspace,
    foreign_folder,
    pop_cache,
    quiet_main,
    tasks_argv,
    vocab_export_argv,
)


def _emb_dir(ws: Workspace, vectors: np.ndarray | bytes, ids: list | bytes, name: str = "emb") -> Path:
    """An ``alignrec embed``-style folder: ``vectors.npy`` + ``item_ids.json`` (raw bytes write a damaged file)."""
    folder = ws.case / name
    folder.mkdir()
    if isinstance(vectors, bytes):
        (folder / "vectors.npy").write_bytes(vectors)
    else:
        np.save(folder / "vectors.npy", vectors)
    (folder / "item_ids.json").write_bytes(ids if isinstance(ids, bytes) else json.dumps(ids).encode())
    return folder


def _vectors(rows: int, width: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)


def _assign(ws: Workspace, emb: Path | None = None, *extra: str, tok: Path | None = None) -> list[str]:
    emb = emb if emb is not None else _emb_dir(ws, _vectors(5), [*FOUR_IDS, "i5"])
    return ["assign-codes", "--tokenizer_dir", str(tok or ws.tok), "--embeddings_dir", str(emb), "--output_dir",
            str(ws.case / "grown"), *extra]


def _grown_keeps_old_codes(ws: Workspace) -> None:
    from tokenization import ItemTokenizer

    old, grown = ItemTokenizer.from_pretrained(ws.tok), ItemTokenizer.from_pretrained(ws.case / "grown")
    assert list(grown.item_ids) == [*FOUR_IDS, "i5"], grown.item_ids
    assert all(old.item_to_string(i) == grown.item_to_string(i) for i in FOUR_IDS)
    assert len({grown.item_to_string(i) for i in grown.item_ids}) == 5  # the new item got a free code


def _nothing_at(*names: str):
    def check(ws: Workspace) -> None:
        for name in names:
            assert not (ws.case / name).exists(), f"{name} was created by a failing command"
    return check


def _tok_copy(ws: Workspace, edit) -> Path:
    """A copy of the shared tokenizer folder, then ``edit(folder)`` (delete / truncate a file)."""
    tok = Path(shutil.copytree(ws.tok, ws.case / "tok_copy"))
    edit(tok)
    return tok


def _truncate(name: str, keep: int = 40):
    def edit(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])
    return edit


def _delete(name: str):
    return lambda folder: (folder / name).unlink()


def _vocab_copy(ws: Workspace, edit) -> Path:
    vocab = Path(shutil.copytree(ws.vocab, ws.case / "vocab_copy"))
    edit(vocab)
    return vocab


def _run_folder(ws: Workspace, manifest: str | None) -> Path:
    """A fake trained run: the shared item tokenizer, and ``alignrec_train.json`` holding ``manifest`` (None: none)."""
    run = ws.case / "run"
    shutil.copytree(ws.tok, run / "item_tokenizer")
    if manifest is not None:
        (run / "alignrec_train.json").write_text(manifest)
    return run


def _published(ws: Workspace) -> Path:
    store = ws.case / "store"
    quiet_main(["cache", "publish", "--cache_dir", str(pop_cache(ws)), "--store_dir", str(store)])
    return store


def _knowledge(ws: Workspace, text: str) -> Path:
    folder = ws.case / "k"
    folder.mkdir()
    (folder / "item_knowledge.jsonl").write_text(text)
    return folder


def _query_file(ws: Workspace, data: bytes) -> str:
    path = ws.case / "queries.json"
    path.write_bytes(data)
    return str(path)


def _tasks_built(ws: Workspace) -> None:
    assert (ws.case / "tasks" / "dataset_dict.json").is_file()


FIVE = [*FOUR_IDS, "i5"]
WIDTH = r"vectors\.npy holds {}-wide vectors but the tokenizer .*tok was fitted on 8-wide ones"
SPLIT = ["--split_dir"]  # readability of the argv lists below

def _add_items(ws: Workspace, model: Path, out: Path | None = None) -> list[str]:
    return ["add-items", "--model_dir", str(model), "--vectors_dir", str(_emb_dir(ws, _vectors(2), ["n1", "n2"])),
            "--output_dir", str(out or ws.case / "grown")]


CASES: list[Case] = [
    # ---- add-items: a trained run folder is required (the grown model itself: tests/trainer/test_add_items.py) ----
    Case("add-items-missing-model", lambda w: _add_items(w, w.case / "nope"), "error", 1,
         r"nope: no such folder; pass the output_dir of `alignrec train`", check=_nothing_at("grown")),
    Case("add-items-tokenizer-as-model", lambda w: _add_items(w, w.tok), "error", 1,
         r"tok/alignrec_train\.json not found: .*tok is not a finished alignrec training run",
         check=_nothing_at("grown")),
    Case("add-items-output-is-model", lambda w: _add_items(w, w.tok, out=w.tok), "error", 1,
         r"output folder .*tok is the input .*tok"),
    # ---- assign-codes: new items get codes; vectors must be in the tokenizer's space ------------------------------
    Case("assign-ok", lambda w: _assign(w), "ok", 0, "", check=_grown_keeps_old_codes),
    Case("assign-wide-vectors", lambda w: _assign(w, _emb_dir(w, _vectors(5, 16), FIVE)), "error", 1,
         WIDTH.format(16) + r".*embed the new items with the source the tokenizer was fitted with",
         check=_nothing_at("grown")),
    Case("assign-narrow-vectors", lambda w: _assign(w, _emb_dir(w, _vectors(2, 4), ["n1", "n2"])), "error", 1,
         WIDTH.format(4)),
    Case("assign-1d-vectors", lambda w: _assign(w, _emb_dir(w, _vectors(1, 5)[0], FIVE)), "error", 1,
         r"emb: vectors must be \[N, D\] with N = len\(item_ids\) = 5, got \(5,\)"),
    Case("assign-count-mismatch", lambda w: _assign(w, _emb_dir(w, _vectors(3), ["n1", "n2"])), "error", 1,
         r"emb: vectors must be \[N, D\] with N = len\(item_ids\) = 2, got \(3, 8\)"),
    Case("assign-ids-truncated-json", lambda w: _assign(w, _emb_dir(w, _vectors(2), b'["n1", "n2"')), "error", 1,
         r"item_ids\.json is not valid UTF-8 JSON"),
    Case("assign-ids-not-a-list", lambda w: _assign(w, _emb_dir(w, _vectors(2), b'{"n1": 0}')), "error", 1,
         r"item_ids\.json must hold a JSON list of item ids, got dict"),
    Case("assign-vectors-truncated", lambda w: _assign(w, _emb_dir(w, b"\x93NUMPY\x01\x00v\x00{'descr", ["n1"])),
         "error", 1, r"emb/vectors\.npy is not a readable numeric \.npy array"),
    Case("assign-nan-vector", lambda w: _assign(w, _emb_dir(w, np.full((1, 8), np.nan, np.float32), ["n1"])),
         "error", 1, r"item 'n1' \(row 0\) has a non-finite embedding"),
    Case("assign-missing-embeddings", lambda w: _assign(w, w.case / "nope"), "error", 1,
         r"nope/vectors\.npy does not exist; write the folder with `alignrec embed`"),
    Case("assign-missing-tokenizer", lambda w: _assign(w, tok=w.case / "nope"), "error", 1,
         r"nope is not a complete ItemTokenizer folder"),
    Case("assign-split-as-tokenizer", lambda w: _assign(w, tok=w.split), "error", 1,
         r"split is not a complete ItemTokenizer folder"),
    Case("assign-truncated-weights", lambda w: _assign(w, tok=_tok_copy(w, _truncate("model.safetensors", 100))),
         "error", 1, r"model\.safetensors does not match its sha256 .*the folder was modified"),
    Case("assign-output-is-tokenizer", lambda w: [*_assign(w)[:5], "--output_dir", str(w.tok)], "error", 1,
         r"output folder .*tok is the input"),
    Case("assign-negative-beam", lambda w: _assign(w, None, "--beam", "-1"), "error", 2, r"--beam must be >= 0"),
    Case("assign-ids-already-coded", lambda w: _assign(w, None, "--item_ids", _ids_file(w, ["i1"])), "error", 1,
         r"1 id\(s\) already have codes .*'i1'.*list only new items"),
    Case("assign-ids-without-vector", lambda w: _assign(w, None, "--item_ids", _ids_file(w, ["zz"])), "error", 1,
         r"1 id\(s\) have no vector in .*emb \(e\.g\. 'zz'\)"),
    # ---- item tokenizer folders ----------------------------------------------------------------------------------
    Case("tok-codes-file-missing", lambda w: tasks_argv_with_tok(w, _tok_copy(w, _delete("item_codes.jsonl"))),
         "error", 1, r"item_codes\.jsonl listed in .*manifest\.json is missing"),
    Case("tok-codes-file-truncated", lambda w: tasks_argv_with_tok(w, _tok_copy(w, _truncate("item_codes.jsonl"))),
         "error", 1, r"item_codes\.jsonl does not match its sha256"),
    Case("tok-config-truncated", lambda w: tasks_argv_with_tok(w, _tok_copy(w, _truncate("config.json", 12))), "error",
         1, r"config\.json does not match its sha256"),
    Case("tok-manifest-missing", lambda w: tasks_argv_with_tok(w, _tok_copy(w, _delete("manifest.json"))), "error", 1,
         r"manifest\.json not found: .*not a complete ItemTokenizer folder"),
    Case("vocab-export-tampered-codes", lambda w: vocab_export_argv(w, tok=_tok_copy(w, _truncate("item_codes.jsonl"))),
         "error", 1, r"item_codes\.jsonl does not match its sha256", check=_nothing_at("v")),
    Case("vocab-export-hf-missing", lambda w: [*vocab_export_argv(w)[:-1], str(w.case / "nope")], "error", 1,
         r"--hf_tokenizer_dir .*nope: no such folder", check=_nothing_at("v")),
    Case("vocab-export-hf-not-a-tokenizer", lambda w: [*vocab_export_argv(w)[:-1], str(foreign_folder(w.case / "hf"))],
         "error", 1, r"--hf_tokenizer_dir .*hf holds no loadable tokenizer", check=_nothing_at("v")),
    # ---- vocab export folders ------------------------------------------------------------------------------------
    Case("vocab-validate-ok", lambda w: ["vocab", "validate", str(w.vocab), "--dataset_dir", str(w.split)], "ok", 0,
         "", check=lambda w: None),
    Case("vocab-validate-tokenizer-folder", lambda w: ["vocab", "validate", str(w.tok)], "error", 1,
         r"tok/manifest\.json lacks or mistypes key\(s\).*not a manifest written by `alignrec vocab export`"),
    Case("vocab-validate-truncated-manifest", lambda w: ["vocab", "validate", str(_vocab_copy(
        w, _truncate("manifest.json", 9)))], "error", 1, r"manifest\.json is not valid JSON.*re-run `alignrec vocab export`"),
    Case("vocab-validate-missing-file", lambda w: ["vocab", "validate", str(_vocab_copy(w, _delete("items.jsonl")))],
         "error", 1, r"items\.jsonl is missing; re-run `alignrec vocab export`"),
    Case("vocab-validate-missing-dataset", lambda w: ["vocab", "validate", str(w.vocab), "--dataset_dir",
                                                      str(w.case / "nope")], "error", 1,
         r"nope is not a saved RecDataset"),
    # ---- trained run folders -------------------------------------------------------------------------------------
    Case("eval-run-unfinished", lambda w: ["evaluate", "--model_dir", str(_run_folder(w, None)), *SPLIT, str(w.split),
                                           "--out_dir", str(w.case / "e")], "error", 1,
         r"alignrec_train\.json not found: .*run is not a finished alignrec training run"),
    Case("eval-run-manifest-truncated", lambda w: ["evaluate", "--model_dir", str(_run_folder(w, '{"a":')), *SPLIT,
                                                   str(w.split), "--out_dir", str(w.case / "e")], "error", 1,
         r"alignrec_train\.json is not valid JSON .*the run folder is damaged"),
    Case("eval-run-manifest-foreign", lambda w: ["evaluate", "--model_dir", str(_run_folder(w, "[1, 2]")), *SPLIT,
                                                 str(w.split), "--out_dir", str(w.case / "e")], "error", 1,
         r"alignrec_train\.json is not an alignrec training manifest"),
    Case("recommend-run-manifest-truncated", lambda w: ["recommend", "--model_dir", str(_run_folder(w, "{")), *SPLIT,
                                                        str(w.split), "--user", "u1"], "error", 1,
         r"alignrec_train\.json is not valid JSON"),
    Case("recommend-run-missing", lambda w: ["recommend", "--model_dir", str(w.case / "nope"), *SPLIT, str(w.split),
                                             "--history", "i1,i2"], "error", 1, r"nope: no such folder"),
    Case("recommend-user-and-history", lambda w: ["recommend", "--model_dir", str(w.case), *SPLIT, str(w.split),
                                                  "--user", "u1", "--history", "i1"], "error", 2,
         r"give one of --history ITEM,ITEM,\.\.\. or --user USER_ID, not both"),
    Case("recommend-unknown-user", lambda w: ["recommend", "--model_dir", str(_run_folder(w, None)), *SPLIT,
                                              str(w.split), "--user", "ghost"], "error", 1,
         r"user 'ghost' is not in .*split \(3 users"),
    Case("recommend-k-zero", lambda w: ["recommend", "--model_dir", str(w.case), *SPLIT, str(w.split), "--user", "u1",
                                        "--k", "0"], "error", 2, r"k must be >= 1, got 0"),
    Case("cache-build-run-unfinished", lambda w: ["cache", "build", "--model_dir", str(_run_folder(w, None)), *SPLIT,
                                                  str(w.split), "--out_dir", str(w.case / "c"), "--k", "2"], "error", 1,
         r"run is not a finished alignrec training run"),
    Case("cache-build-run-tokenizer-damaged", lambda w: ["cache", "build", "--model_dir", str(_damaged_run(w)), *SPLIT,
                                                         str(w.split), "--out_dir", str(w.case / "c"), "--k", "2"],
         "error", 1, r"item_tokenizer/manifest\.json is not valid JSON"),
    Case("train-dataset-not-tasks", lambda w: ["train", "--dataset_dir", str(foreign_folder(w.case / "d")),
                                               "--item_tokenizer_dir", str(w.tok), "--output_dir", str(w.case / "m")],
         "error", 1, r"dataset_dir=.*d is not a tasks build \(no dataset_dict\.json\)"),
    # ---- tasks build inputs --------------------------------------------------------------------------------------
    Case("tasks-query-file-jsonl", lambda w: tasks_argv(w, "--query_file", _query_file(w, b'{"i1": ["a"]}\n{"i2": []}\n')),
         "error", 1, r"query_file .*queries\.json is not one UTF-8 JSON object"),
    Case("tasks-query-file-latin1", lambda w: tasks_argv(w, "--query_file", _query_file(w, b'{"i1": ["gl\xf6ves"]}')),
         "error", 1, r"query_file .*queries\.json is not one UTF-8 JSON object"),
    Case("tasks-query-file-bom", lambda w: tasks_argv(w, "--query_file", _query_file(
        w, b'\xef\xbb\xbf{"i1": ["lab pipette tips"]}'), "--weights", '{"query2item": 1}'), "ok", 0, "",
         check=_tasks_built),
    Case("tasks-query-file-unknown-item", lambda w: tasks_argv(w, "--query_file", _query_file(w, b'{"zz": ["a"]}')),
         "error", 1, r"item 'zz' is not in the dataset's coded catalogue"),
    Case("tasks-user-knowledge-missing", lambda w: tasks_argv(w, "--user_knowledge_dir", str(w.case / "nope")), "error",
         1, r"nope/user_knowledge\.jsonl does not exist; run `alignrec knowledge extract --kinds user`"),
    Case("tasks-bad-weights-json", lambda w: tasks_argv(w, "--weights", "{bad"), "error", 2,
         r"weights must be a JSON object like"),
    # ---- knowledge / scenarios -----------------------------------------------------------------------------------
    Case("knowledge-extract-llm-missing", lambda w: ["knowledge", "extract", *SPLIT, str(w.split), "--out_dir",
                                                     str(w.case / "k"), "--llm_dir", str(w.case / "nope")], "error", 1,
         r"LLM folder .*nope does not exist"),
    Case("knowledge-extract-llm-not-a-model", lambda w: ["knowledge", "extract", *SPLIT, str(w.split), "--out_dir",
                                                         str(w.case / "k"), "--llm_dir", str(w.tok)], "error", 1,
         r"--llm_dir .*tok holds no loadable tokenizer"),
    Case("knowledge-extract-bad-kinds", lambda w: ["knowledge", "extract", *SPLIT, str(w.split), "--out_dir",
                                                   str(w.case / "k"), "--kinds", "items"], "error", 2,
         r"kinds must name item and/or user, got 'items'"),
    Case("knowledge-encode-missing", lambda w: ["knowledge", "encode", "--knowledge_dir", str(w.case / "nope"),
                                                "--out_dir", str(w.case / "v")], "error", 1,
         r"nope holds no item_knowledge\.jsonl"),
    Case("knowledge-encode-truncated-row", lambda w: ["knowledge", "encode", "--knowledge_dir", str(_knowledge(
        w, '{"item_id": "i1", "text": "x"}\n{"item_id": "i2"\n')), "--out_dir", str(w.case / "v")], "error", 1,
         r"item_knowledge\.jsonl:2: not a item knowledge row"),
    Case("knowledge-encode-bad-encoder", lambda w: ["knowledge", "encode", "--knowledge_dir", str(w.case),
                                                    "--out_dir", str(w.case / "v"), "--encoder", "bert"], "error", 2,
         r"encoder must be one of \('sentence', 'llm'\), got 'bert'"),
    Case("knowledge-train-no-vectors", lambda w: ["knowledge", "train", *SPLIT, str(w.split), "--out_dir",
                                                  str(w.case / "m")], "error", 2, r"vectors_dir is required"),
    Case("knowledge-train-vectors-missing", lambda w: ["knowledge", "train", *SPLIT, str(w.split), "--out_dir",
                                                       str(w.case / "m"), "--vectors_dir", str(w.case / "nope")],
         "error", 1, r"nope/item_vectors\.safetensors does not exist; run `alignrec knowledge encode`"),
    Case("knowledge-train-bad-ks", lambda w: ["knowledge", "train", *SPLIT, str(w.split), "--out_dir",
                                              str(w.case / "m"), "--vectors_dir", str(w.case), "--ks", "5,x"], "error",
         2, r"ks must be comma-separated integers, got '5,x'"),
    Case("scenarios-extract-negative-sample", lambda w: ["scenarios", "extract", *SPLIT, str(w.split), "--out_dir",
                                                         str(w.case / "k"), "--user_sample", "-1"], "error", 2,
         r"user_sample must be >= 0, got -1"),
    Case("scenarios-train-bad-models", lambda w: ["scenarios", "train", *SPLIT, str(w.split), "--out_dir",
                                                  str(w.case / "m"), "--models", "gru"], "error", 2,
         r"models must name some of \('sasrec', 'backbone', 'llm4msr'\), got 'gru'"),
    Case("scenarios-train-no-scenarios", lambda w: ["scenarios", "train", *SPLIT, str(w.split), "--out_dir",
                                                    str(w.case / "m"), "--models", "sasrec"], "error", 1,
         r"split has no scenario labels"),
    # ---- tasks queries / requests -------------------------------------------------------------------------------
    Case("tasks-queries-no-output", lambda w: ["tasks", "queries", *SPLIT, str(w.split)], "error", 2,
         r"split_dir and output_file are required"),
    Case("tasks-queries-llm-missing", lambda w: ["tasks", "queries", *SPLIT, str(w.split), "--output_file",
                                                 str(w.case / "q.json"), "--llm_dir", str(w.case / "nope")], "error", 1,
         r"LLM folder .*nope does not exist"),
    Case("tasks-queries-negative-items", lambda w: ["tasks", "queries", *SPLIT, str(w.split), "--output_file",
                                                    str(w.case / "q.json"), "--max_items", "-1"], "error", 2,
         r"max_items"),
    Case("tasks-requests-negative", lambda w: ["tasks", "requests", *SPLIT, str(w.split), "--output_file",
                                               str(w.case / "r.jsonl"), "--per_part", "-1"], "error", 2,
         r"per_part must be >= 0, got -1"),
    Case("tasks-requests-llm-not-a-model", lambda w: ["tasks", "requests", *SPLIT, str(w.split), "--output_file",
                                                      str(w.case / "r.jsonl"), "--llm_dir",
                                                      str(foreign_folder(w.case / "llm"))], "error", 1,
         r"--llm_dir .*llm holds no loadable tokenizer"),
    # ---- sasrec / learn / sasrec-tune ----------------------------------------------------------------------------
    Case("sasrec-missing-split", lambda w: ["sasrec", *SPLIT, str(w.case / "nope"), "--output_dir", str(w.case / "s")],
         "error", 1, r"--split_dir .*nope does not exist"),
    Case("sasrec-bad-loss", lambda w: ["sasrec", *SPLIT, str(w.split), "--output_dir", str(w.case / "s"),
                                       "--sasrec_loss", "hinge"], "error", 2, r"sasrec_loss must be one of .*'hinge'"),
    Case("sasrec-heads-not-dividing", lambda w: ["sasrec", *SPLIT, str(w.split), "--output_dir", str(w.case / "s"),
                                                 "--sasrec_heads", "3", "--sasrec_dim", "16"], "error", 2,
         r"sasrec_heads \(3\) must divide sasrec_dim \(16\)"),
    Case("sasrec-dropout-above-one", lambda w: ["sasrec", *SPLIT, str(w.split), "--output_dir", str(w.case / "s"),
                                                "--sasrec_dropout", "1.5"], "error", 2,
         r"sasrec_dropout must be in \[0, 1\), got 1\.5"),
    Case("learn-bad-source", lambda w: ["learn", *SPLIT, str(w.split), "--output_dir", str(w.case / "l"), "--source",
                                        "nope"], "error", 2, r"--source: invalid choice: 'nope'"),
    Case("learn-zero-temperature", lambda w: ["learn", *SPLIT, str(w.split), "--output_dir", str(w.case / "l"),
                                              "--learn_temperature", "0"], "error", 2, r"learn_temperature"),
    Case("sasrec-tune-run-config-missing", lambda w: ["sasrec-tune", "--run_config", str(w.case / "nope.yaml")],
         "error", 2, r"--run_config .*nope\.yaml does not exist"),
    Case("sasrec-tune-both-inputs", lambda w: ["sasrec-tune", "--run_config", "x.yaml", *SPLIT, str(w.split)], "error",
         2, r"give exactly one of --run_config"),
    # ---- cache get / publish, serve ------------------------------------------------------------------------------
    Case("cache-get-unknown-user", lambda w: ["cache", "get", "ghost", "--store_dir", str(_published(w))], "warn", 0,
         r"1 of 1 users not in the cache: answered with the popular-items fallback"),
    Case("cache-get-scenario-on-plain-store", lambda w: ["cache", "get", "u1", "--store_dir", str(_published(w)),
                                                         "--scenario", "lab"], "error", 1,
         r"scenario 'lab' is not in the cache of .*store: this store has no scenarios"),
    Case("cache-get-empty-redis-url", lambda w: ["cache", "get", "u1", "--store_dir", "redis://"], "error", 1,
         r"redis:// is not a usable Redis URL .*redis://host:port/db"),
    Case("cache-get-redis-bad-port", lambda w: ["cache", "get", "u1", "--store_dir", "redis://localhost:port/0"],
         "error", 1, r"redis://localhost:port/0 is not a usable Redis URL"),
    Case("cache-publish-empty-redis-url", lambda w: ["cache", "publish", "--cache_dir", str(pop_cache(w)), "--target",
                                                     "redis://"], "error", 1, r"redis:// is not a usable Redis URL"),
    Case("cache-publish-split-as-cache", lambda w: ["cache", "publish", "--cache_dir", str(w.split), "--store_dir",
                                                    str(w.case / "s")], "error", 1,
         r"split/manifest\.json not found: the cache build in .*split is missing or unfinished"),
    Case("cache-publish-keep-zero", lambda w: ["cache", "publish", "--cache_dir", str(w.case), "--store_dir",
                                               str(w.case / "s"), "--keep_versions", "0"], "error", 2,
         r"keep_versions must be >= 1"),
    Case("cache-publish-two-targets", lambda w: ["cache", "publish", "--cache_dir", str(w.case), "--store_dir",
                                                 str(w.case / "s"), "--target", "redis://x"], "error", 2,
         r"give exactly one of --store_dir DIR \(SQLite\) or --target"),
    Case("serve-port-out-of-range", lambda w: ["serve", "--store_dir", str(w.case), "--port", "70000"], "error", 2,
         r"port must be in 1\.\.65535, got 70000"),
    Case("serve-negative-workers", lambda w: ["serve", "--store_dir", str(w.case), "--workers", "-1"], "error", 2,
         r"workers must be >= 1, or 0 for one per CPU core"),
    Case("serve-store-is-split", lambda w: ["serve", "--store_dir", str(w.split)], "error", 1,
         r"cannot serve .*split: .*CURRENT not found: no cache is published"),
    # ---- the top-level parser ------------------------------------------------------------------------------------
    Case("top-no-command", lambda w: [], "error", 2, r"^alignrec: error: the following arguments are required: COMMAND"),
    Case("top-unknown-command", lambda w: ["trian"], "error", 2, r"invalid choice: 'trian'.*see `alignrec --help`"),
    Case("top-missing-subcommand", lambda w: ["data"], "error", 2, r"^alignrec data: error: .*required"),
    Case("top-unknown-subcommand", lambda w: ["cache", "purge"], "error", 2, r"^alignrec cache: error: .*'purge'"),
    Case("top-bad-log-level", lambda w: ["--log-level", "LOUD", "data", "stats", str(w.split)], "error", 2,
         r"--log-level: invalid choice: 'LOUD'"),
]


def tasks_argv_with_tok(ws: Workspace, tok: Path) -> list[str]:
    argv = tasks_argv(ws)
    argv[argv.index("--item_tokenizer_dir") + 1] = str(tok)
    return argv


def _ids_file(ws: Workspace, ids: list[str]) -> str:
    path = ws.case / "wanted.txt"
    path.write_text("".join(i + "\n" for i in ids))
    return str(path)


def _damaged_run(ws: Workspace) -> Path:
    run = _run_folder(ws, None)
    (run / "item_tokenizer" / "manifest.json").write_text('{"files": ')
    return run
