"""Metrics against hand-computed values; evaluate_recommender, slices, popularity baseline, report files."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest

from inference.metrics import ndcg_at_k, recall_at_k
from recdata.evaluation import (
    evaluate_recommender,
    evaluation_sample,
    history_bucket,
    load_per_user,
    popularity_buckets,
    write_report,
)
from recdata.popularity import popularity_recommender, train_popularity


@pytest.mark.parametrize(
    "ranked, target, k, recall, ndcg",
    [
        (["a", "b", "c"], "a", 1, 1.0, 1.0),
        (["a", "b", "c"], "b", 1, 0.0, 0.0),
        (["a", "b", "c"], "b", 2, 1.0, 1 / math.log2(3)),
        (["a", "b", "c"], "c", 5, 1.0, 0.5),  # rank 2 -> 1/log2(4)
        (["a", "b", "c"], "z", 20, 0.0, 0.0),
        ([], "a", 10, 0.0, 0.0),
        (["x", "a", "a"], "a", 3, 1.0, 1 / math.log2(3)),  # the first occurrence counts
    ],
)
def test_metrics_hand_computed(ranked, target, k, recall, ndcg):
    assert recall_at_k(ranked, target, k) == recall
    assert ndcg_at_k(ranked, target, k) == pytest.approx(ndcg)


def test_metrics_reject_bad_k():
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(["a"], "a", 0)


def _examples(rows):
    return datasets.Dataset.from_dict({
        "user_id": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows],
    })


def test_evaluate_recommender_hand_computed():
    catalogue = ["a", "b", "c", "d", "e"]
    popularity = {"a": 6, "b": 2, "c": 1, "d": 1}  # 10 interactions: head a (60%), torso b (80%), tail c d, unseen e
    scripted = {
        "u1": ["a", "b", "c"],  # target b at rank 1
        "u2": ["zzz", "a", "d"],  # one invalid item; target d at rank 2
        "u3": ["c", "c", "b"],  # a duplicate; target e missed
        "u4": ["a", "e", "b"],  # target a at rank 0
    }
    examples = _examples([
        ("u1", ["x"], "b"), ("u2", ["x"] * 5, "d"), ("u3", ["x"] * 12, "e"), ("u4", ["x", "y"], "a"),
    ])

    def recommend_fn(user_ids, histories):
        return [[(item, -float(r)) for r, item in enumerate(scripted[u])] for u in user_ids]

    rep = evaluate_recommender(recommend_fn, examples, (1, 3), catalogue, popularity, batch_size=3,
                               show_progress=False)
    assert rep["n_examples"] == 4
    assert rep["overall"]["recall@1"] == pytest.approx(1 / 4)
    assert rep["overall"]["recall@3"] == pytest.approx(3 / 4)
    assert rep["overall"]["ndcg@3"] == pytest.approx((1 / math.log2(3) + 0.5 + 1.0) / 4)
    assert rep["invalid_outputs"] == 1 and rep["total_outputs"] == 12
    assert rep["invalid_rate"] == pytest.approx(1 / 12)
    assert rep["duplicate_rate"] == pytest.approx(1 / 12)
    assert rep["coverage"] == {"@1": pytest.approx(2 / 5), "@3": pytest.approx(5 / 5)}
    hist = rep["slices"]["history_length"]
    assert {b: v["n"] for b, v in hist.items()} == {"1-3": 2, "4-9": 1, ">=10": 1}
    assert hist["1-3"]["recall@1"] == pytest.approx(0.5)  # u1 miss@1, u4 hit@1
    pop = rep["slices"]["target_popularity"]
    assert {b: v["n"] for b, v in pop.items()} == {"head": 1, "torso": 1, "tail": 1, "unseen": 1}
    assert pop["unseen"]["recall@3"] == 0.0 and pop["tail"]["ndcg@3"] == pytest.approx(0.5)


def test_popularity_buckets_keep_ties_together():
    buckets = popularity_buckets({"a": 3, "b": 3, "c": 2, "d": 1, "e": 1}, ["a", "b", "c", "d", "e", "f"])
    # sorted counts 3,3,2,1,1 (total 10): 50% is reached at the 2nd item (count 3), 80% at the 3rd (count 2)
    assert buckets == {"a": "head", "b": "head", "c": "torso", "d": "tail", "e": "tail", "f": "unseen"}
    assert set(popularity_buckets({}, ["a"]).values()) == {"unseen"}
    assert [history_bucket(n) for n in (0, 1, 3, 4, 9, 10, 50)] == ["0", "1-3", "1-3", "4-9", "4-9", ">=10", ">=10"]


def test_popularity_recommender_on_tiny_split(tiny_split):
    counts = train_popularity(tiny_split)
    # training parts: u1 i1 i2 i3, u2 i2 i3, u3 i5, u4 i8 i4 i1 i2, u5 i3
    assert counts == {"i1": 2, "i2": 3, "i3": 3, "i4": 1, "i5": 1, "i8": 1}
    fn = popularity_recommender(tiny_split, k=4, exclude_history=False)
    assert fn(["u"], [["i2"]]) == [[("i2", 3.0), ("i3", 3.0), ("i1", 2.0), ("i4", 1.0)]]
    excl = popularity_recommender(tiny_split, k=8, exclude_history=True)
    rec = excl(["u"], [["i2", "i4"]])[0]
    assert [i for i, _ in rec] == ["i3", "i1", "i5", "i8", "i6", "i7"]  # never-bought items fill the end


def test_evaluate_popularity_baseline_and_write_report(tiny_split, tmp_path):
    examples = tiny_split.eval_examples("test")
    catalogue = tiny_split.dataset.item_ids()
    pop = train_popularity(tiny_split)
    rep = evaluate_recommender(popularity_recommender(tiny_split, k=5, exclude_history=False), examples, (1, 5),
                               catalogue, pop, show_progress=False)
    # top-5 popular: i2 i3 i1 i4 i5; test targets: u1 i5 (rank 4), u2 i7, u3 i1 (rank 2), u4 i7, u5 i5 (rank 4)
    assert rep["overall"]["recall@5"] == pytest.approx(3 / 5)
    assert rep["overall"]["ndcg@5"] == pytest.approx((2 / math.log2(6) + 1 / math.log2(4)) / 5)
    assert rep["invalid_rate"] == 0.0
    json_path, md_path = write_report({"popularity": rep}, tmp_path / "eval", extra={"config": {"part": "test"}})
    data = json.loads(json_path.read_text())
    assert data["config"] == {"part": "test"}
    assert data["recommenders"]["popularity"]["overall"]["recall@5"] == pytest.approx(0.6)
    md = md_path.read_text()
    assert "| popularity | 5 | 0.0000 | 0.6000 |" in md
    assert "## Target popularity" in md and "| popularity | unseen |" in md
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]  # no temp files left
    per_user = load_per_user(tmp_path / "eval")["popularity"]
    assert per_user["user_id"] == list(examples["user_id"])
    assert per_user["recall@5"] == [1.0, 0.0, 1.0, 0.0, 1.0]  # u1 i5, u2 i7 (miss), u3 i1, u4 i7 (miss), u5 i5
    assert "per_user" not in data["recommenders"]["popularity"]


def test_evaluate_rejects_bad_input():
    ex = _examples([("u1", ["a"], "b")])
    fn = lambda users, hists: [[("a", 0.0)] for _ in users]  # noqa: E731
    with pytest.raises(ValueError, match="catalogue is empty"):
        evaluate_recommender(fn, ex, (1,), [], {})
    with pytest.raises(ValueError, match="ks must be positive"):
        evaluate_recommender(fn, ex, (0,), ["a"], {})
    with pytest.raises(ValueError, match="lack column"):
        evaluate_recommender(fn, ex.remove_columns("target"), (1,), ["a"], {})
    with pytest.raises(ValueError, match="returned 0 lists for 1 users"):
        evaluate_recommender(lambda u, h: [], ex, (1,), ["a"], {}, show_progress=False)


def _old_per_user_loop(recs, targets, ks, catalogue):
    """The per-user loop ``evaluate_recommender`` ran before issue 34 (metric calls per k per user), verbatim."""
    per_example = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    recommended_at = {k: set() for k in ks}
    invalid = duplicates = total = short = 0
    for target, rec in zip(targets, recs, strict=True):
        ranked = [item for item, _ in rec][:ks[-1]]
        total += len(ranked)
        invalid += sum(1 for item in ranked if item not in catalogue)
        duplicates += len(ranked) - len(set(ranked))
        short += len(ranked) < ks[-1]
        for k in ks:
            per_example[f"recall@{k}"].append(recall_at_k(ranked, target, k))
            per_example[f"ndcg@{k}"].append(ndcg_at_k(ranked, target, k))
            recommended_at[k].update(item for item in ranked[:k] if item in catalogue)
    return per_example, {"invalid_outputs": invalid, "duplicates": duplicates, "total_outputs": total, "short": short,
                         "coverage": {f"@{k}": len(recommended_at[k]) / len(catalogue) for k in ks}}


def test_vectorised_metrics_equal_the_old_per_user_loop_exactly():
    rng = np.random.default_rng(0)
    catalogue = [f"i{j}" for j in range(60)]
    users, ks = 500, [1, 3, 10, 20]
    targets = [f"i{j}" for j in rng.integers(0, 70, users)]  # some targets outside the catalogue
    recs = []
    for u in range(users):  # lists of 0..25 items: duplicates, invalid ids, targets anywhere or absent
        items = [f"i{j}" for j in rng.integers(0, 66, rng.integers(0, 26))]
        if u % 3 == 0 and items:
            items[int(rng.integers(0, len(items)))] = targets[u]
        recs.append([(item, -float(r)) for r, item in enumerate(items)])
    examples = _examples([(f"u{u}", ["x"] * int(rng.integers(1, 15)), targets[u]) for u in range(users)])
    by_user = dict(zip(examples["user_id"], recs, strict=True))
    rep = evaluate_recommender(lambda ids, _h: [by_user[u] for u in ids], examples, ks, catalogue, {},
                               batch_size=37, show_progress=False)
    per_example, counts = _old_per_user_loop(recs, targets, ks, set(catalogue))
    for name, values in per_example.items():
        assert rep["per_user"][name] == values, name  # every value exactly, so every mean and slice too
        assert rep["overall"][name] == float(np.asarray(values).mean())
    assert rep["per_user"]["user_id"] == list(examples["user_id"])
    assert rep["invalid_outputs"] == counts["invalid_outputs"] > 0 and rep["total_outputs"] == counts["total_outputs"]
    assert rep["duplicate_rate"] == counts["duplicates"] / counts["total_outputs"]
    assert rep["short_list_rate"] == counts["short"] / users and rep["coverage"] == counts["coverage"]


def test_evaluation_sample_is_seeded_and_recorded():
    examples = _examples([(f"u{u}", ["x"], "a") for u in range(100)])
    sample, record = evaluation_sample(examples, 10)
    assert record == {"examples": 10, "of": 100, "sampled": True, "seed": 0}
    users = sample["user_id"]
    assert users != [f"u{u}" for u in range(10)] and len(set(users)) == 10  # a sample, not the first ten users
    assert users == sorted(users, key=lambda u: int(u[1:]))  # in the examples' order
    assert evaluation_sample(examples, 10)[0]["user_id"] == users  # the same users on every call
    assert evaluation_sample(examples, 10, seed=1)[0]["user_id"] != users
    everything, record = evaluation_sample(examples, None)
    assert len(everything) == 100 and record == {"examples": 100, "of": 100, "sampled": False, "seed": None}
    assert evaluation_sample(examples, 500)[1]["sampled"] is False
