"""scripts/bench_cold_rows.py on a tiny cold run: its ``start`` row is the model as trained, its ``fitted`` row is
exactly what ``train.cold_rows: fitted`` ships (a second run trained with it, same seed), valid examples only."""

from __future__ import annotations

import json
import shutil

from tests.scripts import load_script
from tests.trainer.test_cold_rows import train_cold_run


def test_start_and_fitted_rows_against_runs_trained_each_way(monkeypatch, tmp_path, tiny_model_dir, tiny_split):
    start = train_cold_run(monkeypatch, tmp_path, tiny_model_dir, tiny_split, cold_rows="start", name="start_model")
    fitted = train_cold_run(monkeypatch, tmp_path, tiny_model_dir, tiny_split, cold_rows="fitted", name="fit_model")
    runs = {}
    for name, made in (("start", start), ("fitted", fitted)):
        run = tmp_path / f"{name}_run"
        made["split"].save(run / "data" / "split")
        shutil.copytree(made["vectors_dir"], run / "embeddings")
        (run / "train").mkdir()
        made["model_dir"].rename(run / "train" / "model")
        runs[name] = run
    bench = load_script("bench_cold_rows")
    for name, run in runs.items():
        assert bench.main([str(run), "--beams", "20", "--batch_size", "4", "--out", str(tmp_path / f"{name}.json")]) == 0
    as_trained = json.loads((tmp_path / "start.json").read_text())
    shipped = json.loads((tmp_path / "fitted.json").read_text())
    valid = len(start["split"].eval_examples("valid"))
    assert as_trained["examples"] == valid and as_trained["fit"]["items"] == len(start["cold"])
    targets = start["split"].eval_examples("valid")["target"]
    assert as_trained["cold_examples"] == sum(t in set(start["cold"]) for t in targets)
    # the script's fitted decode of the start run == the run trained with cold_rows: fitted, decoded as trained
    assert as_trained["valid"]["fitted"]["overall"] == shipped["valid"]["start"]["overall"]
    assert as_trained["valid"]["fitted"]["overall"] != as_trained["valid"]["start"]["overall"]  # the rows matter
    # refitting a fitted run changes nothing: the warm rows it fits on are the same
    assert shipped["valid"]["fitted"]["overall"] == shipped["valid"]["start"]["overall"]
    assert set(as_trained["bootstrap"]["fitted - start"]) == {"recall@10", "ndcg@10", "cold:recall@10",
                                                             "cold:ndcg@10"}
