"""The bar's search: exact trial order on a scripted objective, resume without retraining, test never read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignrec.recommenders.tuning import coordinate_search, point_key, read_trials

SPACE = {"a": [1, 2, 3], "b": [10, 20]}


def objective(calls):
    def evaluate(params):
        calls.append(dict(params))
        return {"score": -abs(params["a"] - 3) - abs(params["b"] - 20) / 10}
    return evaluate


def test_coordinate_search_walks_axes_then_stops_at_budget(tmp_path):
    calls = []
    result = coordinate_search(SPACE, {"a": 1, "b": 10, "fixed": 7}, objective(calls), budget=4,
                               trials_file=tmp_path / "t.jsonl")
    # start, then axis a (2, 3: moves to 3), then axis b (20: moves); the fixed key rides along
    assert calls == [{"a": 1, "b": 10, "fixed": 7}, {"a": 2, "b": 10, "fixed": 7}, {"a": 3, "b": 10, "fixed": 7},
                     {"a": 3, "b": 20, "fixed": 7}]
    assert result["best"]["params"] == {"a": 3, "b": 20, "fixed": 7}
    assert [t["index"] for t in result["trials"]] == [0, 1, 2, 3]


def test_search_resumes_without_retraining_and_fills_budget_randomly(tmp_path):
    trials = tmp_path / "t.jsonl"
    coordinate_search(SPACE, {"a": 1, "b": 10}, objective([]), budget=2, trials_file=trials)
    calls = []
    result = coordinate_search(SPACE, {"a": 1, "b": 10}, objective(calls), budget=6, trials_file=trials)
    assert {"a": 1, "b": 10} not in calls and {"a": 2, "b": 10} not in calls  # the first two came from the file
    assert len(result["trials"]) == 6 == len(read_trials(trials))  # the whole 3 x 2 grid, each point once
    assert len({t["key"] for t in result["trials"]}) == 6
    assert result["best"]["params"] == {"a": 3, "b": 20}


def test_torn_last_line_is_ignored(tmp_path):
    trials = tmp_path / "t.jsonl"
    trials.write_text(json.dumps({"key": point_key({"a": 1, "b": 10}), "params": {"a": 1, "b": 10}, "index": 0,
                                  "score": -2.1}) + "\n{\"key\": ")
    assert len(read_trials(trials)) == 1


def test_bar_point_rejects_unknown_keys():
    from alignrec.recommenders.bar import bar_sasrec_config
    from recdata.errors import ConfigError

    with pytest.raises(ConfigError, match="sasrec_widht"):
        bar_sasrec_config({"sasrec_widht": 64})
    assert bar_sasrec_config({"sasrec_dim": 32, "content_adaptor_hidden": 16}).sasrec_dim == 32


def test_content_sasrec_reads_text_and_trains(tiny_split):
    from alignrec.recommenders.bar import train_bar

    items = tiny_split.dataset.item_ids()
    text = (items, np.random.default_rng(0).normal(size=(len(items), 6)).astype(np.float32))
    params = {"sasrec_dim": 16, "sasrec_heads": 2, "sasrec_epochs": 3, "sasrec_patience": 0,
              "content_adaptor_hidden": 8}
    model = train_bar(tiny_split, params, seed=1, text=text)
    before = model.output_table().detach().clone()
    model.item_knowledge[1:] = 0.0  # the text vectors reach the item table: without them it changes
    assert not np.allclose(before.numpy(), model.output_table().detach().numpy())
    assert model.train_info["epochs"] == 3


def test_content_row_is_reproducible_whatever_ran_before(tiny_split):
    """The content row's adaptor is built before training seeds; its start must follow the seed, not the global RNG
    (in the pipeline the tuned row trains first in the same process, in sasrec-tune other trials do)."""
    import torch

    from alignrec.recommenders.bar import train_bar

    items = tiny_split.dataset.item_ids()
    text = (items, np.random.default_rng(0).normal(size=(len(items), 6)).astype(np.float32))
    params = {"sasrec_dim": 16, "sasrec_heads": 2, "sasrec_epochs": 2, "sasrec_patience": 0,
              "content_adaptor_hidden": 8}
    tables = []
    for consumed in (0, 7):
        torch.manual_seed(123)
        torch.rand(consumed)  # another history of the global generator
        tables.append(train_bar(tiny_split, params, seed=1, text=text).output_table().detach())
    assert torch.equal(tables[0], tables[1])


def test_bar_training_never_reads_test(tiny_split):
    """Poisoned test targets (each user's last item replaced) leave the bar's valid score unchanged."""
    from alignrec.recommenders.bar import train_bar
    from recdata import RecDataset, leave_one_out_split
    from tests.conftest import TINY_ITEMS, TINY_SEQUENCES

    def score(split):
        params = {"sasrec_dim": 16, "sasrec_epochs": 3, "sasrec_patience": 3}
        return train_bar(split, params, seed=3).train_info["best_valid_ndcg@10"]

    catalogue = [item["item_id"] for item in TINY_ITEMS]
    poisoned = [{**s, "item_ids": s["item_ids"][:-1] + [next(i for i in catalogue if i not in s["item_ids"])]}
                for s in TINY_SEQUENCES]
    assert poisoned != TINY_SEQUENCES
    split = leave_one_out_split(RecDataset.from_records(TINY_ITEMS, poisoned, name="tiny").validate(), max_history=20)
    assert score(tiny_split) == score(split)


def test_tune_command_writes_chosen_point_and_resumes(tiny_split, tmp_path, capsys):
    import yaml

    from alignrec.cli import main
    from alignrec.recommenders.tuning import read_trials

    tiny_split.save(tmp_path / "split")
    argv = ["sasrec-tune", "--split_dir", str(tmp_path / "split"), "--out_dir", str(tmp_path / "bar"), "--budget", "2",
            "--content_budget", "0", "--patience", "1", "--max_epochs", "2"]
    assert main(argv) == 0
    trials = read_trials(tmp_path / "bar" / "trials.jsonl")
    assert [t["params"]["sasrec_dim"] for t in trials] == [64, 128]  # the default, then the width axis
    assert all(t["params"]["sasrec_max_len"] == tiny_split.max_history for t in trials)
    assert {t["torch_threads"] for t in trials} == {torch.get_num_threads()}  # the count decides the trajectory
    chosen = yaml.safe_load((tmp_path / "bar" / "tuned.yaml").read_text())
    best = max(trials, key=lambda t: (t["score"], -t["index"]))
    assert chosen == {"sasrec_tuned": best["params"]}
    assert "valid NDCG@10" in (tmp_path / "bar" / "trials.md").read_text()
    assert main([*argv[:-6], "--budget", "3", "--content_budget", "0", "--patience", "1", "--max_epochs", "2"]) == 0
    assert len(read_trials(tmp_path / "bar" / "trials.jsonl")) == 3  # two reused, one new
    runs = json.loads((tmp_path / "bar" / "tune_config.json").read_text())["invocations"]
    assert [(r["budget"], r["trials_before"], r["content_trials_before"]) for r in runs] == [(2, 0, 0), (3, 2, 0)]
    assert "(valid NDCG@10, 3 trainings)" in (tmp_path / "bar" / "trials.md").read_text()
    assert main([*argv, "--seed", "7"]) == 1  # another seed: other trials, refused in one line
    assert "holds trials of another search (seed differ)" in capsys.readouterr().err


def test_trials_markdown_counts_one_training_in_the_singular():
    from alignrec.tune_cli import trials_markdown

    trial = {"key": "k", "params": {"sasrec_dim": 64}, "index": 0, "score": 0.5, "epochs": 3, "seconds": 1.0}
    text = trials_markdown({"best": trial, "trials": [trial]}, None)
    assert text.splitlines()[0] == "## SASRec (valid NDCG@10, 1 training)"
    assert "| 1 | 64 | None | None | None | None | 0.5000 (chosen) | 3 | 1.0 |" in text


def test_check_resumable_compares_the_recorded_identity(tmp_path):
    from alignrec.recommenders.tuning import check_resumable
    from recdata.errors import UserError

    path = tmp_path / "tune_config.json"
    check_resumable(path, {"seed": 1})  # nothing recorded yet: a fresh search
    path.write_text(json.dumps({"identity": {"data": "k1", "axes": ["a", "b"]}, "seed": 1}))
    check_resumable(path, {"seed": 1})
    check_resumable(path, {"data": "k1", "axes": ("a", "b")}, under="identity")  # JSON-equal values match
    with pytest.raises(UserError, match=r"another search \(data differ\)"):
        check_resumable(path, {"data": "k2", "axes": ["a", "b"]}, under="identity")


def test_tune_space_file_sets_the_axes_and_their_order(tiny_split, tmp_path, capsys):
    from alignrec.cli import main
    from alignrec.recommenders.tuning import read_trials

    tiny_split.save(tmp_path / "split")
    (tmp_path / "space.yaml").write_text("sasrec_dropout: [0.5]\nsasrec_dim: [32]\n")
    argv = ["sasrec-tune", "--split_dir", str(tmp_path / "split"), "--out_dir", str(tmp_path / "bar"), "--budget", "3",
            "--content_budget", "0", "--patience", "1", "--max_epochs", "2", "--space", str(tmp_path / "space.yaml")]
    assert main(argv) == 0
    trials = read_trials(tmp_path / "bar" / "trials.jsonl")
    first, second, third = (t["params"] for t in trials)
    assert (first["sasrec_dim"], first["sasrec_dropout"]) == (64, 0.3)  # the library default starts
    assert (second["sasrec_dim"], second["sasrec_dropout"]) == (64, 0.5)  # the file's first axis first
    assert third["sasrec_dim"] == 32
    assert third["sasrec_dropout"] == (0.5 if trials[1]["score"] > trials[0]["score"] else 0.3)
    assert all(t["params"]["sasrec_weight_decay"] == 0.0 for t in trials)  # built-in axes keep their default value
    header = "| # | dim | dropout | lr | layers | weight_decay | valid NDCG@10 | epochs | s |"
    assert header in (tmp_path / "bar" / "trials.md").read_text().splitlines()


@pytest.mark.parametrize("text, expected", [
    ("sasrec_max_len: [50]\n", "axis 'sasrec_max_len' is not a tunable SASRec key"),
    ("sasrec_dimm: [64]\n", "axis 'sasrec_dimm' is not a tunable SASRec key"),
    ("sasrec_dim: []\n", "axis 'sasrec_dim': give a non-empty list of values"),
    ("- 1\n", "must hold a mapping"),
])
def test_tune_space_file_refuses_bad_axes_in_one_line(tiny_split, tmp_path, capsys, text, expected):
    from alignrec.cli import main

    tiny_split.save(tmp_path / "split")
    (tmp_path / "space.yaml").write_text(text)
    argv = ["sasrec-tune", "--split_dir", str(tmp_path / "split"), "--out_dir", str(tmp_path / "bar"),
            "--space", str(tmp_path / "space.yaml")]
    assert main(argv) == 2  # a configuration error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "space.yaml") in err[0] and expected in err[0]
    assert not (tmp_path / "bar").exists()  # refused before the output folder is claimed
