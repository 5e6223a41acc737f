"""scripts/compare_runs.py: rows of two evaluate folders (written by the evaluate stage's writer) compared end to
end on hand-made per-user tables: exact means, paired differences and ratios, a degenerate interval when every
user differs by the same amount, and its one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.significance import paired_bootstrap, seed_pooled_bootstrap
from recdata.evaluation import write_report
from tests.scripts import load_script

# user -> (ndcg@10, recall@10); dyadic values, so differences and means are exact in float64
LLM_ROWS = {
    "alignrec": {"u1": (1.0, 1.0), "u2": (0.5, 1.0), "u3": (0.25, 0.0), "u4": (0.25, 1.0)},
    "popularity": {"u1": (0.0, 0.0), "u2": (0.25, 1.0), "u3": (0.0, 0.0), "u4": (0.0, 0.0)},
}
SCRATCH_ROWS = {
    "alignrec": {"u1": (0.5, 1.0), "u2": (0.5, 1.0), "u3": (0.5, 1.0), "u4": (0.0, 0.0)},
    "shifted": {"u1": (0.75, 1.0), "u2": (0.25, 1.0), "u3": (0.0, 0.0), "u4": (0.0, 1.0)},  # llm alignrec - 0.25
}


def _script():
    return load_script("compare_runs")


def _write_eval(folder: Path, rows: dict[str, dict[str, tuple[float, float]]], part: str = "test") -> None:
    """An evaluate output folder as ``recdata.evaluation.write_report`` writes it (metrics.json, per_user.parquet)."""
    reports = {}
    for name, users in rows.items():
        ndcg = np.array([v[0] for v in users.values()])  # [users]
        recall = np.array([v[1] for v in users.values()])  # [users]
        reports[name] = {"n_examples": len(users), "ks": [10], "invalid_rate": 0.0, "coverage": {"@10": 0.5},
                         "overall": {"recall@10": float(recall.mean()), "ndcg@10": float(ndcg.mean())},
                         "per_user": {"user_id": list(users), "recall@10": recall.tolist(), "ndcg@10": ndcg.tolist()}}
    write_report(reports, folder, extra={"config": {"EvaluateConfig": {"part": part, "max_examples": None}},
                                         "sample": {"examples": 4, "of": 4, "sampled": False, "seed": None}})


@pytest.fixture
def folders(tmp_path):
    """``(llm run folder, scratch evaluate folder)``: one a run folder (its evaluate/), one an --out_dir folder."""
    _write_eval(tmp_path / "llm" / "evaluate", LLM_ROWS)
    _write_eval(tmp_path / "scratch_eval", SCRATCH_ROWS)
    return tmp_path / "llm", tmp_path / "scratch_eval"


def _argv(folders, *rest: str) -> list[str]:
    llm, scratch = folders
    return [f"llm={llm}", f"scratch={scratch}", "--ours", "llm:alignrec", *rest]



def _assert_one_line_refusal(capsys, expected: list[str]) -> None:
    """Nothing on stdout; one ``compare_runs: error:`` line on stderr holding every ``expected`` text."""
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compare_runs: error: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])

def test_means_differences_and_ratios_are_exact(folders, tmp_path, capsys):
    out = tmp_path / "out" / "compare.json"
    argv = _argv(folders, "--versus", "scratch:alignrec", "llm:popularity", "--out", str(out))
    assert _script().main(argv) == 0
    result = json.loads(out.read_text())
    assert result["users"] == 4 and result["part"] == "test" and result["metrics"] == ["ndcg@10", "recall@10"]
    assert result["means"] == {"llm:alignrec": {"ndcg@10": 0.5, "recall@10": 0.75},
                               "scratch:alignrec": {"ndcg@10": 0.375, "recall@10": 0.75},
                               "llm:popularity": {"ndcg@10": 0.0625, "recall@10": 0.25}}
    versus = result["differences"]["scratch:alignrec"]["ndcg@10"]
    assert versus["mean_diff"] == np.mean([1.0 - 0.5, 0.5 - 0.5, 0.25 - 0.5, 0.25 - 0.0]) == 0.125
    assert versus["low"] <= versus["mean_diff"] <= versus["high"] and versus["low"] < versus["high"]
    assert versus["ratio"] == pytest.approx(0.5 / 0.375)
    assert result["differences"]["scratch:alignrec"]["recall@10"]["ratio"] == 1.0
    assert result["differences"]["llm:popularity"]["ndcg@10"]["ratio"] == pytest.approx(8.0)
    # the one bootstrap: the same numbers as calling it on the per-user dicts
    ours = {u: v[0] for u, v in LLM_ROWS["alignrec"].items()}
    theirs = {u: v[0] for u, v in SCRATCH_ROWS["alignrec"].items()}
    assert {k: v for k, v in versus.items() if k != "ratio"} == paired_bootstrap(ours, theirs, resamples=2000, seed=0)
    printed = capsys.readouterr().out
    assert "| llm:alignrec | 0.5000 | 0.7500 |" in printed
    assert "| scratch:alignrec | +0.1250 [" in printed and "| 1.333 |" in printed
    assert _script().main(argv) == 0  # a previous output of the script may be replaced


def test_interval_is_degenerate_when_every_user_differs_by_the_same(folders, tmp_path):
    out = tmp_path / "degenerate.json"
    assert _script().main(_argv(folders, "--versus", "scratch:shifted", "--out", str(out))) == 0
    diff = json.loads(out.read_text())["differences"]["scratch:shifted"]
    assert diff["ndcg@10"]["mean_diff"] == diff["ndcg@10"]["low"] == diff["ndcg@10"]["high"] == 0.25
    assert diff["recall@10"]["mean_diff"] == diff["recall@10"]["low"] == diff["recall@10"]["high"] == 0.0


@pytest.mark.parametrize(("case", "versus", "expected"), [
    ("other users", ["scratch:alignrec"], ["4 users", "3 users", "(3 shared)", "llm/evaluate", "scratch_eval"]),
    ("other part", ["scratch:alignrec"], ["test part", "valid part", "llm/evaluate", "scratch_eval"]),
    ("unknown row", ["scratch:nope"], ["unknown row of scratch", "nope", "alignrec", "shifted"]),
    ("unknown metric", ["scratch:alignrec", "--metrics", "ndcg@5"], ["ndcg@5", "ndcg@10", "recall@10"]),
])
def test_refusals_are_one_line_with_exit_status_2(folders, capsys, case, versus, expected):
    llm, scratch = folders
    if case == "other users":  # another sample: u4 was not scored
        _write_eval(scratch, {name: dict(list(users.items())[:3]) for name, users in SCRATCH_ROWS.items()})
    if case == "other part":
        _write_eval(scratch, SCRATCH_ROWS, part="valid")
    assert _script().main(_argv(folders, "--versus", *versus)) == 2
    _assert_one_line_refusal(capsys, expected)


def test_refuses_to_replace_a_file_it_did_not_write(folders, tmp_path, capsys):
    foreign = tmp_path / "results.json"
    foreign.write_text('{"someone": "else"}')
    assert _script().main(_argv(folders, "--versus", "scratch:alignrec", "--out", str(foreign))) == 1
    assert "not an output of compare_runs.py" in capsys.readouterr().err
    assert foreign.read_text() == '{"someone": "else"}'


def test_refuses_runs_of_two_splits_with_the_same_users(tmp_path, tiny_dataset, capsys):
    """User ids are positions, so two splits with as many users pass the user check; their examples do not. Item
    text alone may differ (a later loader cleans it): the same examples are still paired."""
    from recdata import RecDataset, leave_one_out_split
    from tests.conftest import TINY_ITEMS, TINY_SEQUENCES

    other = RecDataset.from_records(TINY_ITEMS, [{**s, "item_ids": s["item_ids"][::-1]} for s in TINY_SEQUENCES],
                                    name="tiny").validate()
    retitled = RecDataset.from_records([{**item, "title": item["title"] + " (cleaned)"} for item in TINY_ITEMS],
                                       TINY_SEQUENCES, name="tiny").validate()
    for name, dataset in (("one", tiny_dataset), ("two", other), ("same", retitled)):
        leave_one_out_split(dataset, max_history=20).save(tmp_path / name / "split")
        config = {"EvaluateConfig": {"part": "test", "split_dir": str(tmp_path / name / "split")}}
        write_report({"alignrec": {"n_examples": 4, "ks": [10], "invalid_rate": 0.0, "coverage": {"@10": 0.5},
                                   "overall": {"recall@10": 0.5, "ndcg@10": 0.25},
                                   "per_user": {"user_id": ["0", "1", "2", "3"], "recall@10": [1.0, 0.0, 1.0, 0.0],
                                                "ndcg@10": [0.5, 0.0, 0.5, 0.0]}}},
                     tmp_path / name / "evaluate", extra={"config": config})
    argv = [f"a={tmp_path / 'one'}", f"b={tmp_path / 'two'}", "--ours", "a:alignrec", "--versus", "b:alignrec"]
    assert _script().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different splits" in err[0]
    argv[1] = f"b={tmp_path / 'same'}"
    assert _script().main(argv) == 0


# seeds: per seed, user -> ndcg@10 (recall@10 is 1 - ndcg@10, so its sums over seeds stay exact too); each user's
# ndcg@10 sums over the 3 seeds to a multiple of 0.75, so the per-user means over seeds are exact in float64
NEW_SEEDS = [{"u1": 1.0, "u2": 0.5, "u3": 0.25, "u4": 0.25},  # per-user means over seeds 0.5, 0.5, 0.25, 0.25
             {"u1": 0.5, "u2": 0.5, "u3": 0.5, "u4": 0.0},
             {"u1": 0.0, "u2": 0.5, "u3": 0.0, "u4": 0.5}]
OLD_SEEDS = [{"u1": 0.25, "u2": 0.0, "u3": 0.0, "u4": 0.5},  # per-user means over seeds 0.25 each
             {"u1": 0.5, "u2": 0.25, "u3": 0.25, "u4": 0.0},
             {"u1": 0.0, "u2": 0.5, "u3": 0.5, "u4": 0.25}]


def _seed_rows(ndcg: dict[str, float]) -> dict[str, tuple[float, float]]:
    return {user: (value, 1.0 - value) for user, value in ndcg.items()}


@pytest.fixture
def seed_folders(tmp_path):
    """``(new run folders, old evaluate folders)``, one per seed: ours in the new runs, the bar in the old ones."""
    new, old = [], []
    for i, (ours, bar) in enumerate(zip(NEW_SEEDS, OLD_SEEDS, strict=True)):
        _write_eval(tmp_path / f"new_seed{i}" / "evaluate", {"alignrec": _seed_rows(ours)})
        _write_eval(tmp_path / f"old_seed{i}", {"sasrec": _seed_rows(bar), "alignrec": _seed_rows(ours)})
        new.append(tmp_path / f"new_seed{i}")
        old.append(tmp_path / f"old_seed{i}")
    return new, old


def _seed_argv(new: list[Path], old: list[Path], *rest: str) -> list[str]:
    return [f"new={','.join(map(str, new))}", f"old={','.join(map(str, old))}", "--ours", "new:alignrec",
            "--versus", "old:sasrec", "old:alignrec", *rest]


def test_seeds_are_paired_by_position_and_pooled_on_per_user_means(seed_folders, tmp_path, capsys):
    out = tmp_path / "seeds.json"
    assert _script().main(_seed_argv(*seed_folders, "--out", str(out))) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == 3 and result["users"] == 4 and len(result["sources"]["new"]) == 3
    assert [row["folder"] for row in result["rows"]["new:alignrec"]] == [str(f / "evaluate") for f in seed_folders[0]]
    ndcg = result["means"]["new:alignrec"]["ndcg@10"]
    assert ndcg["per_seed"] == [0.5, 0.375, 0.25] and ndcg["mean"] == 0.375 and ndcg["std"] == 0.125
    assert result["means"]["old:sasrec"]["ndcg@10"] == {"mean": 0.25, "std": 0.0625, "n": 3,
                                                        "per_seed": [0.1875, 0.25, 0.3125]}
    sasrec = result["differences"]["old:sasrec"]
    for i, pair in enumerate(sasrec["per_seed"]):  # seed i of ours against seed i of the bar, as one folder each
        assert {k: v for k, v in pair["ndcg@10"].items() if k != "ratio"} == paired_bootstrap(
            NEW_SEEDS[i], OLD_SEEDS[i], resamples=2000, seed=0)
    assert [p["ndcg@10"]["mean_diff"] for p in sasrec["per_seed"]] == [0.3125, 0.125, -0.0625]
    assert [p["recall@10"]["mean_diff"] for p in sasrec["per_seed"]] == [-0.3125, -0.125, 0.0625]
    assert sasrec["per_seed"][0]["ndcg@10"]["ratio"] == pytest.approx(0.5 / 0.1875)
    # pooled: per-user means over seeds of ours minus those of the bar, bootstrapped once over users
    for m, sign in (("ndcg@10", 1.0), ("recall@10", -1.0)):
        ours_mean = {u: float(np.mean([_seed_rows(s)[u][m == "recall@10"] for s in NEW_SEEDS])) for u in NEW_SEEDS[0]}
        bar_mean = {u: float(np.mean([_seed_rows(s)[u][m == "recall@10"] for s in OLD_SEEDS])) for u in OLD_SEEDS[0]}
        pooled = sasrec["pooled"][m]
        assert pooled["mean_diff"] == np.mean([ours_mean[u] - bar_mean[u] for u in ours_mean]) == sign * 0.125
        assert {k: v for k, v in pooled.items() if k != "ratio"} == paired_bootstrap(ours_mean, bar_mean,
                                                                                       resamples=2000, seed=0)
        assert pooled["ratio"] == pytest.approx(result["means"]["new:alignrec"][m]["mean"]
                                                / result["means"]["old:sasrec"][m]["mean"])
    same = result["differences"]["old:alignrec"]  # the same per-user values in both folders: a zero interval
    assert all(p[m]["mean_diff"] == p[m]["low"] == p[m]["high"] == 0.0 for p in [*same["per_seed"], same["pooled"]]
               for m in ("ndcg@10", "recall@10"))
    printed = capsys.readouterr().out
    assert "3 seeds" in printed and "| new:alignrec | 0.3750 ± 0.1250 |" in printed
    for label in ("old:sasrec, seed 1 | +0.3125 [", "old:sasrec, seed 3 | -0.0625 [",
                  "old:sasrec, mean over seeds | +0.1250 [", "old:alignrec, mean over seeds | +0.0000 ["):
        assert label in printed, label


@pytest.mark.parametrize(("case", "expected"), [
    ("counts differ", ["different numbers of folders", "'new': 3", "'old': 2"]),
    ("seed users differ", ["new:alignrec (seed 1)", "new:alignrec (seed 2)", "4 users", "3 users", "new_seed1"]),
    ("folder twice", ["lists", "old_seed0", "twice"]),
])
def test_seed_refusals_are_one_line_with_exit_status_2(seed_folders, capsys, case, expected):
    new, old = seed_folders
    if case == "counts differ":
        old = old[:2]
    if case == "seed users differ":  # seed 2 of both sides scored another sample: each pair alone would pass
        _write_eval(new[1] / "evaluate", {"alignrec": _seed_rows(dict(list(NEW_SEEDS[1].items())[:3]))})
        _write_eval(old[1], {name: _seed_rows(dict(list(seeds[1].items())[:3]))
                             for name, seeds in (("sasrec", OLD_SEEDS), ("alignrec", NEW_SEEDS))})
    if case == "folder twice":
        old = [old[0], old[0], old[2]]
    assert _script().main(_seed_argv(new, old)) == 2
    _assert_one_line_refusal(capsys, expected)


# --slice: a tiny leave-one-out split (last item = test target, the one before = valid target, the rest train) whose
# training counts are A 7, B 3, C 1, D 1 of 12, so recdata.evaluation.popularity_buckets puts A in head (the first
# 50%), B in torso (to 80%), C and D in tail, and Y (never trained on) in unseen: tail users u2, u3, u6, u7
SLICE_SEQUENCES = {"u1": "ABCXA", "u2": "ABXC", "u3": "ABXD", "u4": "ADXB", "u5": "AXY", "u6": "AXC", "u7": "AXD"}
TAIL = ["u2", "u3", "u6", "u7"]
# per row (per seed), user -> ndcg@10 of the target's rank in a scripted list: 1.0 (rank 1), 0.5 (rank 3), 0.0 (missed)
SLICE_NEW = [{"u1": 0.0, "u2": 1.0, "u3": 0.5, "u4": 1.0, "u5": 0.0, "u6": 0.5, "u7": 0.0},  # tail mean 0.5
             {"u1": 1.0, "u2": 0.5, "u3": 0.5, "u4": 0.0, "u5": 0.0, "u6": 1.0, "u7": 0.5},  # tail mean 0.625
             {"u1": 0.5, "u2": 0.0, "u3": 1.0, "u4": 0.5, "u5": 1.0, "u6": 0.5, "u7": 0.5}]  # tail mean 0.5
SLICE_OLD = [{"u1": 1.0, "u2": 0.5, "u3": 0.0, "u4": 0.0, "u5": 1.0, "u6": 0.5, "u7": 0.0},  # tail mean 0.25
             {"u1": 0.0, "u2": 0.0, "u3": 0.5, "u4": 1.0, "u5": 0.0, "u6": 0.0, "u7": 0.5},  # tail mean 0.25
             {"u1": 0.5, "u2": 1.0, "u3": 0.0, "u4": 0.5, "u5": 0.5, "u6": 0.0, "u7": 0.0}]  # tail mean 0.25
RANK_OF_NDCG = {1.0: 0, 0.5: 2, 0.0: None}


def _slice_split(path: Path) -> Path:
    from recdata import RecDataset, leave_one_out_split

    items = [{"item_id": item, "title": f"Item {item}"} for item in "ABCDXY"]
    sequences = [{"user_id": user, "item_ids": list(seq)} for user, seq in SLICE_SEQUENCES.items()]
    leave_one_out_split(RecDataset.from_records(items, sequences, name="slices").validate(), max_history=20).save(path)
    return path


def _write_slice_eval(folder: Path, split_dir: Path, rows: dict[str, dict[str, float]]) -> None:
    """An evaluate folder as the evaluation writes it: ``evaluate_recommender`` on the split's test examples with
    scripted lists (so its metrics.json slices are the evaluation's own), then ``write_report``."""
    from recdata import SplitDataset
    from recdata.evaluation import evaluate_recommender

    split = SplitDataset.load(split_dir)
    examples, catalogue = split.eval_examples("test"), split.dataset.item_ids()
    target = dict(zip(examples["user_id"], examples["target"], strict=True))

    def scripted(ndcg: dict[str, float]):
        def recommend(user_ids, histories):
            lists = []
            for user in user_ids:
                ranked, rank = [item for item in catalogue if item != target[user]], RANK_OF_NDCG[ndcg[user]]
                lists.append([(item, 1.0) for item in (ranked if rank is None else
                                                        [*ranked[:rank], target[user], *ranked[rank:]])])
            return lists
        return recommend

    reports = {name: evaluate_recommender(scripted(ndcg), examples, (10,), catalogue, split.train_popularity(),
                                          show_progress=False) for name, ndcg in rows.items()}
    write_report(reports, folder, extra={"config": {"EvaluateConfig": {"part": "test", "split_dir": str(split_dir)}}})


def _slice_folders(tmp_path: Path, seeds: int) -> tuple[list[Path], list[Path]]:
    """``(new run folders, old evaluate folders)``, one per seed, each run with its own copy of the split."""
    new, old = [], []
    for i, (ours, bar) in enumerate(zip(SLICE_NEW[:seeds], SLICE_OLD[:seeds], strict=True)):
        new.append(tmp_path / f"new{i}")  # a run folder (its evaluate/ and data/split)
        old.append(tmp_path / f"old{i}")  # an evaluate folder whose split lies elsewhere
        _write_slice_eval(new[-1] / "evaluate", _slice_split(new[-1] / "data" / "split"), {"alignrec": ours})
        _write_slice_eval(old[-1], _slice_split(tmp_path / f"old_split{i}"), {"sasrec": bar})
    return new, old


@pytest.fixture
def slice_folders(tmp_path):
    return _slice_folders(tmp_path, seeds=1)


def _slice_argv(new: list[Path], old: list[Path], *rest: str) -> list[str]:
    return [f"new={','.join(map(str, new))}", f"old={','.join(map(str, old))}", "--ours", "new:alignrec",
            "--versus", "old:sasrec", *rest]


def test_slice_restricts_means_and_pairs_to_the_bucket(slice_folders, tmp_path, capsys):
    new, old = slice_folders
    out = tmp_path / "tail.json"
    assert _script().main(_slice_argv(new, old, "--slice", "tail", "--out", str(out))) == 0
    result = json.loads(out.read_text())
    assert result["slice"] == "tail" and result["n"] == 4 and result["users"] == 7
    assert result["means"] == {"new:alignrec": {"ndcg@10": 0.5, "recall@10": 0.75},
                               "old:sasrec": {"ndcg@10": 0.25, "recall@10": 0.5}}
    stored = json.loads((new[0] / "evaluate" / "metrics.json").read_text())["recommenders"]["alignrec"]
    assert stored["slices"]["target_popularity"]["tail"]["n"] == 4
    assert stored["slices"]["target_popularity"]["tail"]["ndcg@10"] == 0.5
    diff = result["differences"]["old:sasrec"]["ndcg@10"]
    assert diff["mean_diff"] == 0.25 and diff["ratio"] == 2.0
    ours, bar = ({u: ndcg[0][u] for u in TAIL} for ndcg in (SLICE_NEW, SLICE_OLD))
    assert {k: v for k, v in diff.items() if k != "ratio"} == paired_bootstrap(ours, bar, resamples=2000, seed=0)
    printed = capsys.readouterr().out
    assert printed.startswith("# new:alignrec against 1 rows, tail slice (n = 4)\n")
    assert "4 of the 7 test users with a tail target" in printed and "| new:alignrec | 0.5000 | 0.7500 |" in printed
    assert _script().main(_slice_argv(new, old, "--out", str(out))) == 0  # without --slice: every user, no slice keys
    result = json.loads(out.read_text())
    assert result["users"] == 7 and "slice" not in result and "n" not in result
    assert capsys.readouterr().out.startswith("# new:alignrec against 1 rows\n\n7 test users, the same in every row")


def test_slice_pooled_over_seeds(tmp_path, capsys):
    out = tmp_path / "tail_seeds.json"
    assert _script().main(_slice_argv(*_slice_folders(tmp_path, seeds=3), "--slice", "tail", "--out", str(out))) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == 3 and result["slice"] == "tail" and result["n"] == 4
    assert result["means"]["new:alignrec"]["ndcg@10"]["per_seed"] == [0.5, 0.625, 0.5]
    assert result["means"]["old:sasrec"]["ndcg@10"]["per_seed"] == [0.25, 0.25, 0.25]
    diff = result["differences"]["old:sasrec"]
    assert [p["ndcg@10"]["mean_diff"] for p in diff["per_seed"]] == [0.25, 0.375, 0.25]
    ours = [{u: ndcg[u] for u in TAIL} for ndcg in SLICE_NEW]  # seed i of ours against seed i of the bar
    bar = [{u: ndcg[u] for u in TAIL} for ndcg in SLICE_OLD]
    pooled = diff["pooled"]["ndcg@10"]
    assert {k: v for k, v in pooled.items() if k != "ratio"} == seed_pooled_bootstrap(ours, bar, resamples=2000, seed=0)
    assert pooled["mean_diff"] == pytest.approx((0.5 + 0.625 + 0.5) / 3 - 0.25)
    assert "3 seeds, tail slice (n = 4)" in capsys.readouterr().out


@pytest.mark.parametrize(("case", "expected"), [
    ("unknown bucket", ["--slice 'middle'", "'head'", "'tail'", "'unseen'"]),
    ("planted slice mean", ["old:sasrec", "ndcg@10", "4 tail users is 0.250000", "metrics.json's tail ndcg@10 is 0.3"]),
    ("planted slice n", ["old:sasrec", "4 users have a tail target", "slice has 5"]),
    ("no slice", ["old:sasrec", "no target_popularity slice 'tail'", "['head', 'torso', 'unseen']"]),
    ("split gone", ["old:sasrec", "old_split0", "--slice needs the split"]),
])
def test_slice_refusals_are_one_line_with_exit_status_2(slice_folders, tmp_path, capsys, case, expected):
    import shutil

    new, old = slice_folders
    record_path = old[0] / "metrics.json"
    record = json.loads(record_path.read_text())
    tail = record["recommenders"]["sasrec"]["slices"]["target_popularity"]
    if case == "planted slice mean":
        tail["tail"]["ndcg@10"] = 0.3
    if case == "planted slice n":
        tail["tail"]["n"] = 5
    if case == "no slice":
        del tail["tail"]
    record_path.write_text(json.dumps(record))
    if case == "split gone":  # the split this test wrote under its own tmp_path, nothing else
        split_dir = Path(record["config"]["EvaluateConfig"]["split_dir"]).resolve()
        assert split_dir.is_relative_to(tmp_path.resolve())
        shutil.rmtree(split_dir)
    bucket = "middle" if case == "unknown bucket" else "tail"
    assert _script().main(_slice_argv(new, old, "--slice", bucket)) == 2
    _assert_one_line_refusal(capsys, expected)
