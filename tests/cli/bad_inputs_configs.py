"""The bad-input table, config files and flags: YAML types, unknown keys, wrong enums, negative, huge and non-finite
numbers, empty / binary / duplicated-key files, run configs and ``--set`` overrides, and devices this machine does
not have (``cuda`` on a CPU machine, ``npu``, ``cuda:7``) on every command that takes one.
"""

from __future__ import annotations

from tests.cli.bad_inputs import (
    Case,
    Workspace,
    cache_build_argv,
    embed_argv,
    prepare_argv,
    run_yaml_argv,
    tasks_argv,
    tokenize_argv,
    yaml_file,
)
from tests.cli.bad_inputs_data import expected_sequences

HUGE = "99999999999999999999999"  # beyond int64


def _prep_yaml(ws: Workspace, text: str | bytes, *extra: str) -> list[str]:
    path = ws.case / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return prepare_argv(ws.src, ws.case / "out", "--config", str(path), *extra)


def _run_file(ws: Workspace, text: str | bytes, *extra: str) -> list[str]:
    path = ws.case / "run.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["run", "--config", str(path), *extra]


def _no_run_folder(ws: Workspace) -> None:
    assert not (ws.case / "runs").exists(), list((ws.case / "runs").rglob("*"))


def _eval(ws: Workspace, *extra: str) -> list[str]:
    return ["evaluate", "--model_dir", str(ws.case), "--split_dir", str(ws.split), "--out_dir", str(ws.case / "e"),
            *extra]


def _device_line(flag: str, value: str) -> str:
    return rf"{flag} '{value}' (cannot be used|is not a torch device|holds no data|does not exist).*this machine has cpu"


CUDA_SECTION = "tokenizer:\n  rq_device: cuda\n"
BINARY = bytes(range(128, 256)) * 3

CASES: list[Case] = [
    # ---- config files: encodings and shapes ---------------------------------------------------------------------
    Case("yaml-empty-file", lambda w: _prep_yaml(w, ""), "ok", 0, "", check=expected_sequences),
    Case("yaml-bom", lambda w: _prep_yaml(w, b"\xef\xbb\xbfkcore: 0\n"), "ok", 0, "", check=expected_sequences),
    Case("yaml-crlf", lambda w: _prep_yaml(w, "kcore: 0\r\nmax_history: 5\r\n"), "ok", 0, "",
         check=expected_sequences),
    Case("yaml-flag-beats-file", lambda w: _prep_yaml(w, "min_user_interactions: 9\n", "--min_user_interactions", "3"),
         "ok", 0, "", check=expected_sequences),
    Case("yaml-binary", lambda w: _prep_yaml(w, BINARY), "error", 2, r"c\.yaml is not UTF-8 text"),
    Case("yaml-duplicate-key", lambda w: _prep_yaml(w, "kcore: 5\nkcore: 0\n"), "error", 2,
         r"c\.yaml:2 .*key 'kcore' is given twice \(first on line 1\)"),
    Case("yaml-number-key", lambda w: _prep_yaml(w, "kcore: 0\n1: 2\n"), "error", 2, r"c\.yaml: key 1 is not a field name"),
    Case("yaml-python-tag", lambda w: _prep_yaml(w, 'kcore: !!python/object/apply:os.system ["true"]\n'), "error", 2,
         r"c\.yaml:1 is not valid YAML"),
    Case("yaml-tab-indent", lambda w: _prep_yaml(w, "kcore:\n\t- 1\n"), "error", 2, r"c\.yaml:2 is not valid YAML"),
    # ---- config files: value types --------------------------------------------------------------------------------
    Case("yaml-bool-for-int", lambda w: _prep_yaml(w, "kcore: true\n"), "error", 2, r"kcore: True is not an integer"),
    Case("yaml-string-for-float", lambda w: _prep_yaml(w, "cold_item_fraction: lots\n"), "error", 2,
         r"cold_item_fraction: 'lots' is not a number"),
    Case("yaml-exponent-for-int", lambda w: _prep_yaml(w, "min_user_interactions: 1e3\n"), "error", 2,
         r"min_user_interactions: '1e3' is not an integer"),
    Case("yaml-null-value", lambda w: _prep_yaml(w, "kcore: null\n"), "error", 2, r"kcore: null is not allowed"),
    Case("yaml-scalar-for-list", lambda w: _prep_yaml(w, "temporal_ratios: 0.8\n"), "error", 2,
         r"temporal_ratios: 0.8 must be a list"),
    Case("yaml-bad-list-item", lambda w: _prep_yaml(w, "temporal_ratios: [0.8, x, 0.1]\n"), "error", 2,
         r"temporal_ratios: 'x' is not a number"),
    Case("yaml-mapping-for-list", lambda w: _eval(w, "--config", yaml_file(w, "ks: {a: 1}\n")), "error", 2,
         r"ks: \{'a': 1\} must be a list"),
    Case("yaml-negative", lambda w: _prep_yaml(w, "kcore: -1\n"), "error", 2, r"kcore=-1 must be >= 0"),
    Case("yaml-huge-int", lambda w: _prep_yaml(w, f"max_history: {HUGE}\n"), "error", 2,
         r"max_history=9+ is too large .*c\.yaml"),
    Case("yaml-nan", lambda w: _prep_yaml(w, "cold_item_fraction: .nan\n"), "error", 2, r"cold_item_fraction=nan"),
    Case("yaml-wrong-enum", lambda w: _prep_yaml(w, "split: random\n"), "error", 2, r"split.*'random'"),
    Case("tok-yaml-unknown-key", lambda w: tokenize_argv(w, "--config", yaml_file(w, "num_level: 3\n")), "error", 2,
         r"num_level: did you mean num_levels"),
    Case("tok-yaml-wrong-enum", lambda w: tokenize_argv(w, "--config", yaml_file(w, "source: texts\n")), "error", 2,
         r"source: 'texts' is not one of"),
    Case("tok-yaml-negative-latent", lambda w: tokenize_argv(w, "--config", yaml_file(w, "latent_dim: -4\n")), "error",
         2, r"latent_dim"),
    Case("tasks-yaml-unknown-key", lambda w: tasks_argv(w, "--config", yaml_file(w, "wieghts: {seqrec: 1}\n")), "error", 2,
         r"wieghts: did you mean weights"),
    Case("tasks-yaml-bad-format", lambda w: tasks_argv(w, "--config", yaml_file(w, "prompt_format: html\n")), "error", 2,
         r"prompt_format: 'html' is not one of"),
    Case("tasks-yaml-weights-mapping", lambda w: tasks_argv(w, "--config", yaml_file(w, "weights: {seqrec: 1, item2code: 1}\n")),
         "ok", 0, "", check=lambda w: _assert_built(w.case / "tasks")),
    Case("cache-yaml-string-k", lambda w: [*cache_build_argv(w), "--config", yaml_file(w, "k: ten\n")], "error", 2,
         r"k: 'ten' is not an integer"),
    Case("serve-yaml-unknown-key", lambda w: ["serve", "--store_dir", str(w.case), "--config", yaml_file(w, "prot: 80\n")],
         "error", 2, r"unknown config key\(s\) \['prot'\].*did you mean port"),
    Case("serve-yaml-port-string", lambda w: ["serve", "--store_dir", str(w.case), "--config",
                                              yaml_file(w, "port: http\n")], "error", 2, r"port: 'http' is not an integer"),
    Case("knowledge-yaml-mode", lambda w: ["knowledge", "extract", "--split_dir", str(w.split), "--out_dir",
                                           str(w.case / "k"), "--config", yaml_file(w, "mode: mixed\n")], "error", 2,
         r"mode must be one of \('individual', 'collective'\), got 'mixed'"),
    Case("train-yaml-unknown-key", lambda w: ["train", "--dry_run", "--dataset_dir", str(w.case), "--output_dir",
                                              str(w.case / "m"), "--config", yaml_file(w, "lora_rr: 4\n")], "error", 2,
         r"lora_rr: did you mean lora_r"),
    Case("train-yaml-duplicate-key", lambda w: ["train", "--dry_run", "--dataset_dir", str(w.case), "--output_dir",
                                                str(w.case / "m"), "--config", yaml_file(w, "lora_r: 4\nlora_r: 8\n")],
         "error", 2, r"key 'lora_r' is given twice"),
    # ---- flags: numbers -------------------------------------------------------------------------------------------
    Case("flag-huge-int", lambda w: prepare_argv(w.src, w.case / "out", "--max_history", HUGE), "error", 2,
         r"max_history=9+ is too large"),
    Case("flag-infinite-float", lambda w: prepare_argv(w.src, w.case / "out", "--min_rating", "inf"), "error", 2,
         r"min_rating=inf is not a finite number"),
    Case("flag-nan-learning-rate", lambda w: ["train", "--dry_run", "--dataset_dir", str(w.case), "--item_tokenizer_dir",
                                              str(w.tok), "--output_dir", str(w.case / "m"), "--learning_rate", "nan"],
         "error", 2, r"learning_rate=nan is not a finite number"),
    Case("cache-k-huge", lambda w: cache_build_argv(w, "--k", HUGE), "error", 2, r"k=9+ is too large"),
    Case("cache-k-zero", lambda w: cache_build_argv(w, "--k", "0"), "error", 2, r"k, batch_size and chunk_size must be >= 1"),
    Case("tok-negative-codebook", lambda w: tokenize_argv(w, "--codebook_size", "-4"), "error", 2,
         r"codebook_size must be 0 \(auto\) or >= 2"),
    Case("data-negative-history", lambda w: prepare_argv(w.src, w.case / "out", "--max_history", "-5"), "error", 2,
         r"max_history=-5 must be >= 1"),
    Case("data-fraction-above-one", lambda w: prepare_argv(w.src, w.case / "out", "--cold_item_fraction", "1.5"), "error", 2,
         r"cold_item_fraction=1\.5 must be in \[0, 1\)"),
    # ---- run configs and overrides ---------------------------------------------------------------------------------
    Case("run-empty-file", lambda w: _run_file(w, ""), "error", 2, r"run\.yaml: set `name:`"),
    Case("run-binary-file", lambda w: _run_file(w, BINARY), "error", 2, r"run\.yaml is not UTF-8 text"),
    Case("run-duplicate-section", lambda w: _run_file(w, f"name: t\nruns_dir: {w.case / 'runs'}\ndata:\n  path: x\n"
                                                         "data:\n  path: y\n"), "error", 2,
         r"run\.yaml:5 .*key 'data' is given twice"),
    Case("run-section-not-mapping", lambda w: _run_file(w, f"name: t\nruns_dir: {w.case / 'runs'}\ndata: 5\n"), "error",
         2, r"section 'data' must be a mapping of config keys, got int"),
    Case("run-missing-data-path", lambda w: _run_file(w, f"name: t\nruns_dir: {w.case / 'runs'}\ndata:\n  kcore: 0\n"),
         "error", 2, r"run\.yaml \[data\]: path is required; add `path: ...`", check=_no_run_folder),
    Case("run-set-without-value", lambda w: [*run_yaml_argv(w, ""), "--set", "tokenizer"], "error", 2,
         r"--set 'tokenizer': expected section\.key=value"),
    Case("run-set-unknown-section", lambda w: [*run_yaml_argv(w, ""), "--set", "tokeniser.num_levels=3"], "error", 2,
         r"'tokeniser' is not a section"),
    Case("run-set-bad-yaml", lambda w: [*run_yaml_argv(w, ""), "--set", "tokenizer.num_levels=[", "--dry_run"], "error", 2,
         r"--set 'tokenizer\.num_levels=\[': value '\[' is not a YAML scalar"),
    Case("run-set-wrong-type", lambda w: [*run_yaml_argv(w, ""), "--set", "tokenizer.num_levels=three", "--dry_run"],
         "error", 2, r"num_levels: 'three' is not an integer"),
    Case("run-from-after-until", lambda w: [*run_yaml_argv(w, ""), "--from", "cache", "--until", "data"], "error", 2,
         r"--from cache comes after --until data"),
    Case("run-until-unknown-stage", lambda w: [*run_yaml_argv(w, ""), "--until", "deploy"], "error", 2,
         r"--until: invalid choice: 'deploy'"),
    # ---- devices this machine does not have ------------------------------------------------------------------------
    Case("run-device-in-section", lambda w: run_yaml_argv(w, CUDA_SECTION), "error", 2,
         r"run\.yaml: tokenizer\.rq_device 'cuda' .*--set tokenizer\.rq_device=cpu", check=_no_run_folder),
    Case("run-device-dry-run-plans", lambda w: [*run_yaml_argv(w, CUDA_SECTION), "--dry_run"], "ok", 0, "",
         check=_no_run_folder),
    Case("run-device-outside-range", lambda w: [*run_yaml_argv(w, CUDA_SECTION), "--until", "data", "--dry_run"], "ok", 0,
         "", check=_no_run_folder),
    Case("eval-device-cuda", lambda w: _eval(w, "--device", "cuda"), "error", 2, _device_line("--device", "cuda")),
    Case("eval-device-npu", lambda w: _eval(w, "--device", "npu"), "error", 2, _device_line("--device", "npu")),
    Case("eval-device-cuda-7", lambda w: _eval(w, "--device", "cuda:7"), "error", 2, _device_line("--device", "cuda:7")),
    Case("eval-device-bad-index", lambda w: _eval(w, "--device", "cuda:x"), "error", 2,
         _device_line("--device", "cuda:x")),
    Case("cache-device-meta", lambda w: cache_build_argv(w, "--k", "2", "--device", "meta"), "error", 2,
         _device_line("--device", "meta")),
    Case("recommend-device-gpu", lambda w: ["recommend", "--model_dir", str(w.case), "--split_dir", str(w.split),
                                            "--history", "i1", "--device", "gpu"], "error", 2,
         _device_line("--device", "gpu")),
    Case("tok-rq-device-cuda", lambda w: tokenize_argv(w, "--rq_device", "cuda"), "error", 2,
         _device_line("--rq_device", "cuda")),
    Case("tok-device-from-yaml", lambda w: tokenize_argv(w, "--config", yaml_file(w, "rq_device: npu\n")), "error", 2,
         r"c\.yaml: " + _device_line("--rq_device", "npu")),
    Case("embed-text-device-xpu", lambda w: [*embed_argv(w), "--text_device", "xpu"], "error", 2,
         _device_line("--text_device", "xpu")),
    Case("sasrec-device-cuda", lambda w: ["sasrec", "--split_dir", str(w.split), "--output_dir", str(w.case / "s"),
                                          "--sasrec_device", "cuda"], "error", 2,
         _device_line("--sasrec_device", "cuda")),
    Case("learn-device-cuda", lambda w: ["learn", "--split_dir", str(w.split), "--output_dir", str(w.case / "l"),
                                         "--learn_device", "cuda"], "error", 2, _device_line("--learn_device", "cuda")),
    Case("knowledge-extract-device", lambda w: ["knowledge", "extract", "--split_dir", str(w.split), "--out_dir",
                                                str(w.case / "k"), "--device", "cuda"], "error", 2,
         _device_line("--device", "cuda")),
    Case("knowledge-encode-device", lambda w: ["knowledge", "encode", "--knowledge_dir", str(w.case), "--out_dir",
                                               str(w.case / "v"), "--device", "npu"], "error", 2,
         _device_line("--device", "npu")),
    Case("scenarios-extract-device", lambda w: ["scenarios", "extract", "--split_dir", str(w.split), "--out_dir",
                                                str(w.case / "k"), "--device", "cuda:0"], "error", 2,
         _device_line("--device", "cuda:0")),
    Case("sasrec-tune-device", lambda w: ["sasrec-tune", "--split_dir", str(w.split), "--out_dir", str(w.case / "t"),
                                          "--device", "cuda"], "error", 2, _device_line("--device", "cuda")),
]


def _assert_built(tasks) -> None:
    import json

    manifest = json.loads((tasks / "tasks_manifest.json").read_text())
    assert manifest.get("item_tokenizer_hash"), manifest
    assert (tasks / "dataset_dict.json").is_file()
