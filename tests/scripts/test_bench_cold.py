"""scripts/bench_cold.py: the cold table from a run folder (exact on the tiny split), its run config, its refusals,
and (slow: the real MiniLM) the whole script on the tiny pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from alignrec.pipeline.config import run_config_from_dict
from inference.significance import bootstrap_interval
from recdata.cold_items import items_without_training
from recdata.errors import ConfigError
from recdata.evaluation import evaluate_recommender, write_report
from recdata.popularity import train_popularity
from tests.recdata.test_cold_slice import SCRIPTED, cold_split_of
from tests.scripts import load_script


def _bench():
    return load_script("bench_cold")


def fake_run(run_dir: Path, split, popularity_split=None, part="test") -> None:
    """A run folder as the pipeline leaves it: the split, and an evaluation of two scripted rows on ``part``'s
    examples (also what ``test_bench_cold_requests`` runs the script on)."""
    split.save(run_dir / "data" / "split")
    rows = {"alignrec": lambda users, hists: [[(i, 1.0) for i in SCRIPTED[u]] for u in users],
            "other": lambda users, hists: [[("i1", 1.0)] for _ in users]}
    examples = split.eval_examples(part)
    counts = train_popularity(popularity_split or split)
    reports = {name: evaluate_recommender(fn, examples, [1, 10], split.dataset.item_ids(), counts,
                                          cold_items=items_without_training(split), show_progress=False)
               for name, fn in rows.items()}
    write_report(reports, run_dir / "evaluate", extra={"config": {"EvaluateConfig": {"part": part,
                                                                                     "exclude_history": True}},
                                                       "sample": {"sampled": False}})


def test_cold_rows_exact_on_the_tiny_split(tmp_path, tiny_split):
    bench = _bench()
    fake_run(tmp_path, cold_split_of(tiny_split, "i5"))
    result = bench.cold_rows(tmp_path, "test")
    assert result["metrics"] == ["recall@10", "ndcg@10"]
    # test targets u1 i5, u2 i7, u3 i1, u4 i7, u5 i5: i5 withheld, i7 never bought -> 4 cold, 2 of them withheld
    assert result["split"] == {"examples": 5, "exclude_history": True, "cold_targets": 4,
                               "cold_targets_of_withheld_items": 2, "items": 8, "items_without_training": 3,
                               "withheld_items": 1}
    ours, other = result["rows"]["alignrec"], result["rows"]["other"]
    assert (ours["all"]["n"], ours["cold"]["n"]) == (5, 4)
    assert ours["cold"]["recall@10"]["mean"] == pytest.approx(3 / 4)  # ranks 0, 1, miss, 1
    assert ours["cold"]["ndcg@10"]["mean"] == pytest.approx((1 + 2 / math.log2(3)) / 4)
    assert ours["all"]["recall@10"] == bootstrap_interval([1.0, 1.0, 1.0, 0.0, 1.0])  # one implementation
    assert other["all"]["recall@10"]["mean"] == pytest.approx(1 / 5)  # only u3's i1 (warm)
    assert {k: other["cold"]["recall@10"][k] for k in ("mean", "low", "high")} == {"mean": 0.0, "low": 0.0,
                                                                                  "high": 0.0}
    versus = result["versus_ours"]["other"]
    assert versus["recall@10"]["mean_diff"] == pytest.approx(3 / 5) and versus["recall@10"]["users"] == 5
    assert versus["cold:recall@10"]["mean_diff"] == pytest.approx(3 / 4) and versus["cold:recall@10"]["users"] == 4
    md = bench.render(result, "t")
    assert ("5 test examples, 4 with a cold target (no training interaction): 2 of them a withheld item (1 items "
            "withheld in all)") in md
    assert "| other | 5 | 0.2000 [" in md and "| 4 | 0.0000 [0.0000, 0.0000] | 0.0000 [0.0000, 0.0000] |" in md
    assert "cold Recall@10 diff [low, high]" in md and "| other | +0.6000 [" in md


def test_cold_rows_refuse_another_part_a_plain_split_and_a_leaked_evaluation(tmp_path, tiny_split):
    bench = _bench()
    cold = cold_split_of(tiny_split, "i5")
    fake_run(tmp_path / "valid_run", cold, part="valid")
    with pytest.raises(ValueError, match="scored 'valid' targets, not 'test'"):
        bench.cold_rows(tmp_path / "valid_run", "test")
    fake_run(tmp_path / "plain", tiny_split)
    with pytest.raises(ValueError, match="no cold-item protocol"):
        bench.cold_rows(tmp_path / "plain", "test")
    # an evaluation whose popularity counted the withheld i5 (training the models must not see): unseen != cold
    fake_run(tmp_path / "leak", cold, popularity_split=tiny_split)
    with pytest.raises(ValueError, match="unseen bucket n 2 != 4 cold targets"):
        bench.cold_rows(tmp_path / "leak", "test")


def test_cold_run_config_sets_the_protocol_and_the_rows():
    bench = _bench()
    run_cfg = run_config_from_dict({"name": "sci", "evaluate": {"part": "test"}})
    cfg = bench.cold_run_config(run_cfg, 0.1, "valid")
    assert cfg.name == "sci__cold0.1"
    assert cfg.sections["data"] == {"cold_item_fraction": 0.1}
    assert cfg.sections["evaluate"] == {"part": "valid", "text_retriever_baseline": True}
    assert cfg.sections["embeddings"] == {"learn_baseline": True}
    assert bench.cold_run_config(run_cfg, 0.1, "test", learn=False).sections["embeddings"] == {}
    with pytest.raises(ConfigError, match="cold_item_fraction must be in"):
        bench.cold_run_config(run_cfg, 0.0, "valid")


@pytest.mark.slow
def test_bench_cold_end_to_end_on_the_tiny_pipeline(tmp_path, tiny_chat_tokenizer):
    """The tiny run config under the protocol: ours, SASRec, LEARN, the text retriever (real MiniLM) and popularity,
    each with its cold slice, on valid targets; the run's models never saw a withheld item in training."""
    import yaml

    from recdata import SplitDataset
    from tests.pipeline.test_run_end_to_end import NUM_USERS, tiny_run_config

    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["embeddings"].update({"learn_dim": 16, "learn_heads": 1, "learn_layers": 1, "learn_epochs": 2,
                                 "text_max_length": 32})
    config["evaluate"].update({"ks": [5, 10], "num_beams": 16})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "cold.json"
    assert _bench().main([str(path), "--cold_item_fraction", "0.2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["part"] == "valid"
    assert set(data["rows"]) == {"alignrec", "sasrec", "learn", "text retriever", "popularity"}
    run_dir = Path(data["run_dir"])
    split = SplitDataset.load(run_dir / "data" / "split")
    cold = set(items_without_training(split))
    assert len(cold) >= 5 and not cold & {i for _, items in split.train_sequences() for i in items}
    assert data["split"]["cold_targets"] == sum(t in cold for t in split.eval_examples("valid")["target"]) > 0
    for row in data["rows"].values():
        assert row["all"]["n"] == NUM_USERS and row["cold"]["n"] == data["split"]["cold_targets"]
    assert np.isfinite(data["rows"]["text retriever"]["cold"]["ndcg@10"]["mean"])
    assert out.with_suffix(".md").read_text().count("| text retriever |") == 2  # the table and the paired table
