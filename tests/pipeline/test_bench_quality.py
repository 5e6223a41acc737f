"""scripts/bench_quality.py: the ablation mode is test-blind (poisoned test targets leave its rows unchanged)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from recdata.errors import ConfigError
from tests.pipeline.test_run_end_to_end import tiny_run_config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_quality.py"
SPEC = {  # a shared budget, the base run and one lever (evaluate-only, so the test stays short)
    "budget": {"train.max_steps": 3, "tokenizer.rq_epochs": 10},
    "reference": "base",
    "variants": [
        {"name": "base", "note": "the tiny recipe"},
        {"name": "beams8", "note": "wider beam", "set": {"evaluate.num_beams": 8}, "from": "base"},
    ],
}


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _poison_test_targets(folder: Path) -> int:
    """Replace every user's last item (its leave-one-out test target) by an item it never bought."""
    path = folder / "Tiny.inter.json"
    inter = json.loads(path.read_text())
    items = sorted({i for seq in inter.values() for i in seq})
    for seq in inter.values():
        seq[-1] = next(i for i in items[::-1] if i not in seq)
    path.write_text(json.dumps(inter))
    return len(inter)


def test_ablation_rows_never_read_test_targets(tmp_path, tiny_chat_tokenizer):
    bench = _bench()
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["evaluate"]["part"] = "test"  # the config's own part: the ablation mode must override it
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    clean_data, poisoned_data = tmp_path / "data", tmp_path / "data_poisoned"
    poisoned_data.mkdir()
    for f in clean_data.iterdir():
        (poisoned_data / f.name).write_bytes(f.read_bytes())
    assert _poison_test_targets(poisoned_data) == 40

    outputs = {}
    for label, data in (("clean", clean_data), ("poisoned", poisoned_data)):
        cfg_path = tmp_path / f"{label}.yaml"
        cfg_path.write_text(yaml.safe_dump({**config, "data": {**config["data"], "path": str(data)}}))
        out = tmp_path / f"{label}.json"
        assert bench.main([str(cfg_path), "--ablations", str(spec_path), "--runs_dir", str(tmp_path / label),
                           "--out", str(out)]) == 0
        outputs[label] = json.loads(out.read_text())

    clean, poisoned = outputs["clean"], outputs["poisoned"]
    assert clean["part"] == "valid" and [r["variant"] for r in clean["rows"]] == ["base", "beams8"]
    assert all(key.startswith("valid:") for r in clean["rows"] for key in r if "@" in key and key != "selection:ndcg@10")
    assert json.dumps(clean["rows"], sort_keys=True) == json.dumps(poisoned["rows"], sort_keys=True)
    assert json.dumps(clean["baselines"], sort_keys=True) == json.dumps(poisoned["baselines"], sort_keys=True)
    assert set(clean["versus_reference"]) == {"beams8"} and clean["versus_reference"] == poisoned["versus_reference"]
    # the runs did score valid targets, and the poison did change the test part
    runs = {label: tmp_path / label / "tiny__base" for label in outputs}
    metrics = json.loads((runs["clean"] / "evaluate" / "metrics.json").read_text())
    assert metrics["config"]["EvaluateConfig"]["part"] == "valid"
    from recdata import SplitDataset

    splits = {label: SplitDataset.load(run / "data" / "split") for label, run in runs.items()}
    assert splits["clean"].dataset.item_ids() == splits["poisoned"].dataset.item_ids()
    assert list(splits["clean"].eval_examples("valid")["target"]) == list(splits["poisoned"].eval_examples("valid")["target"])
    clean_test, poisoned_test = (list(splits[k].eval_examples("test")["target"]) for k in ("clean", "poisoned"))
    assert all(a != b for a, b in zip(clean_test, poisoned_test, strict=True))


@pytest.mark.parametrize("spec, match", [
    ({"variants": [{"name": "a", "set": {"evaluate.part": "test"}}]}, "sets evaluate.part"),
    ({"budget": {"evaluate.part": "test"}, "variants": [{"name": "a"}]}, "budget sets evaluate.part"),
    ({"variants": [{"name": "a", "from": "b"}, {"name": "b"}]}, "not an earlier variant"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "repeated"),
    ({"variants": [{"name": "a", "sett": {}}]}, "unknown key"),
    ({"varients": []}, "unknown key"),
    ({"variants": []}, "no `variants:`"),
])
def test_bad_ablation_specs_are_named(spec, match):
    with pytest.raises(ConfigError, match=match):
        _bench().check_spec(spec, "spec.yaml")


def test_reference_bootstrap_pairs_variants_and_baseline_rows():
    rows = {"alignrec": {"user_id": ["u1", "u2", "u3"], "recall@10": [1.0, 0.0, 1.0], "ndcg@10": [0.5, 0.0, 1.0]},
            "sasrec": {"user_id": ["u3", "u2", "u1"], "recall@10": [0.0, 1.0, 1.0], "ndcg@10": [0.0, 0.5, 0.5]}}
    lever = {"alignrec": {"user_id": ["u1", "u2", "u3"], "recall@10": [1.0, 1.0, 1.0], "ndcg@10": [1.0, 0.5, 1.0]}}
    bench = _bench()
    versus_variant = bench.reference_bootstrap({"base": rows, "lever": lever}, "base")
    assert set(versus_variant) == {"lever"}
    assert versus_variant["lever"]["ndcg@10"]["mean_diff"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    versus_row = bench.reference_bootstrap({"base": rows}, "sasrec")  # a baseline row of the same run
    assert versus_row["base"]["recall@10"]["mean_diff"] == pytest.approx((0.0 - 1.0 + 1.0) / 3)
    assert bench.reference_bootstrap({"base": rows}, None) == {}
    with pytest.raises(ConfigError, match="neither a variant"):
        bench.reference_bootstrap({"base": rows}, "bm25")


def test_set_uses_the_pipeline_parser(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {"path": str(tmp_path)}}))
    with pytest.raises(SystemExit):
        _bench().main([str(path), "--set", "tokeniser.num_levels=3"])
    assert "'tokeniser' is not a section" in capsys.readouterr().err
