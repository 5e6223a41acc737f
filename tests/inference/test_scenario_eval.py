"""Per-scenario metrics against hand-computed values; popularity per scenario; dense scenario masks; the router."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from alignrec.recommenders import SASRec, SASRecConfig, as_recommend_fn
from inference.scenarios import scenario_router
from recdata import RecDataset, leave_one_out_split
from recdata.evaluation import (
    evaluate_recommender,
    evaluate_within_scenario,
    render_markdown,
    render_scenario_table,
)
from recdata.popularity import popularity_recommender

CATALOGUES = {"f": ["a", "b", "c"], "k": ["x", "y", "z"]}


def _examples(rows):
    return datasets.Dataset.from_dict({
        "user_id": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows],
        "target_scenario": [r[3] for r in rows],
    })


EXAMPLES = _examples([("u1", ["q"], "b", "f"), ("u2", ["q"], "c", "f"), ("u3", ["q"], "y", "k")])
WHOLE = {"u1": ["x", "b", "a"], "u2": ["a", "y", "z"], "u3": ["y", "a", "b"]}  # whole-catalogue lists
WITHIN = {("u1", "f"): ["b", "a", "c"], ("u2", "f"): ["a", "b", "c"], ("u3", "k"): ["z", "x", "y"]}


def _scripted(user_ids, histories, scenarios=None):
    if scenarios is None:
        lists = [WHOLE[u] for u in user_ids]
    else:
        lists = [WITHIN[(u, s)] for u, s in zip(user_ids, scenarios, strict=True)]
    return [[(item, -float(r)) for r, item in enumerate(items)] for items in lists]


def test_target_scenario_slice_hand_computed():
    rep = evaluate_recommender(_scripted, EXAMPLES, (1, 2), ["a", "b", "c", "x", "y", "z"], batch_size=2,
                               show_progress=False)
    f, k = rep["slices"]["target_scenario"]["f"], rep["slices"]["target_scenario"]["k"]
    # f: u1 hits b at rank 1 (ndcg 1/log2(3)); u2 misses c. k: u3 hits y at rank 0.
    assert f["n"] == 2 and k["n"] == 1
    assert f["recall@1"] == 0.0 and f["recall@2"] == 0.5
    assert f["ndcg@2"] == pytest.approx(0.5 / math.log2(3))
    assert k["recall@1"] == 1.0 and k["ndcg@2"] == 1.0
    assert rep["overall"]["recall@2"] == pytest.approx(2 / 3)


def test_within_scenario_hand_computed():
    rep = evaluate_within_scenario(_scripted, EXAMPLES, CATALOGUES, (1, 3), batch_size=2, show_progress=False)
    assert rep["ranking"] == "within_scenario"
    f, k = rep["by_scenario"]["f"], rep["by_scenario"]["k"]
    # f: u1 -> b at rank 0, u2 -> c at rank 2 (ndcg 0.5). k: u3 -> y at rank 2.
    assert f["recall@1"] == 0.5 and f["recall@3"] == 1.0 and f["ndcg@3"] == pytest.approx(0.75)
    assert k["recall@1"] == 0.0 and k["ndcg@3"] == pytest.approx(0.5)
    assert rep["overall"]["ndcg@3"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)  # each example once
    assert rep["invalid_rate"] == 0.0 and f["catalogue_size"] == 3
    table = render_scenario_table({"m": {"ks": [1, 3], "within_scenario": rep}})
    assert "| m | within_scenario | f | 2 | 0.5000 | 1.0000 |" in table


def test_within_scenario_counts_other_scenarios_items_as_invalid():
    def leaky(user_ids, histories, scenarios=None):
        return [[("x", 1.0), ("b", 0.5)] for _ in user_ids]

    rep = evaluate_within_scenario(leaky, EXAMPLES.select([0]), CATALOGUES, (2,), show_progress=False)
    assert rep["invalid_rate"] == 0.5  # "x" is not an f item
    assert rep["by_scenario"]["f"]["recall@2"] == 1.0


def test_within_scenario_needs_labels():
    plain = EXAMPLES.remove_columns("target_scenario")
    with pytest.raises(ValueError, match="target_scenario"):
        evaluate_within_scenario(_scripted, plain, CATALOGUES, show_progress=False)


def test_render_markdown_shows_the_scenario_family():
    rep = evaluate_recommender(_scripted, EXAMPLES, (1, 2), ["a", "b", "c", "x", "y", "z"], show_progress=False)
    rep["within_scenario"] = evaluate_within_scenario(_scripted, EXAMPLES, CATALOGUES, (1, 2), show_progress=False)
    md = render_markdown({"m": rep})
    assert "Target scenario (ranking within the whole catalogue)" in md
    assert "| m | whole_catalogue | k | 1 |" in md and "| m | within_scenario | k | 1 |" in md


def _mixed_split():
    items = [{"item_id": i} for i in ("a", "b", "c", "x", "y", "z")]
    seqs = [
        {"user_id": "u1", "item_ids": ["a", "x", "b", "y", "c"], "scenarios": ["f", "k", "f", "k", "f"]},
        {"user_id": "u2", "item_ids": ["x", "y", "a", "z"], "scenarios": ["k", "k", "f", "k"]},
        {"user_id": "u3", "item_ids": ["x", "b", "y", "a", "c"], "scenarios": ["k", "f", "k", "f", "f"]},
    ]
    return leave_one_out_split(RecDataset.from_records(items, seqs).validate())


def test_popularity_per_scenario():
    split = _mixed_split()  # training: f a 1, b 2; k x 3, y 2
    fn = popularity_recommender(split, k=3, exclude_history=True)
    assert fn(["u"], [["b"]], scenarios=["f"]) == [[("a", 1.0), ("c", 0.0)]]
    assert fn(["u"], [[]], scenarios=["k"]) == [[("x", 3.0), ("y", 2.0), ("z", 0.0)]]
    assert [i for i, _ in fn(["u"], [[]])[0]] == ["x", "b", "y"]  # whole catalogue: global counts
    with pytest.raises(ValueError, match="unknown scenario 'q'"):
        fn(["u"], [[]], scenarios=["q"])


class _Recording(SASRec):
    """Records what reaches ``final_states``: the seam a scenario tower (part 2) reads."""

    seen: list = []

    def final_states(self, hidden, **context):
        type(self).seen.append(context.get("scenarios"))
        return hidden


def test_dense_scenario_mask_and_context():
    cfg = SASRecConfig(sasrec_dim=8, sasrec_heads=2, sasrec_layers=1, sasrec_max_len=5)
    torch.manual_seed(0)
    model = _Recording(["a", "b", "c", "x", "y", "z"], cfg).eval()
    fn = as_recommend_fn(model, k=6, exclude_history=True, scenario_items=CATALOGUES)
    out = fn(["u1", "u2"], [["a", "x"], ["y"]], scenarios=["f", "k"])
    assert {i for i, _ in out[0]} == {"b", "c"}  # f items minus the history
    assert {i for i, _ in out[1]} == {"x", "z"}
    assert _Recording.seen[-1] == ["f", "k"]
    whole = fn(["u1"], [["a"]])
    assert len(whole[0]) == 5
    scores = model.score([["a", "x"]])[0]
    assert [s for _, s in out[0]] == pytest.approx(sorted([float(scores[1]), float(scores[2])], reverse=True))


def test_router_restricts_history_and_falls_back():
    calls = []

    def model_f(user_ids, histories):
        calls.append(("f", list(histories)))
        return [[("c", 1.0)] for _ in user_ids]

    def fallback(user_ids, histories, scenarios=None):
        calls.append(("fallback", list(scenarios)))
        return [[("z", 0.0)] for _ in user_ids]

    router = scenario_router({"f": model_f, "k": model_f}, CATALOGUES, fallback=fallback)
    out = router(["u1", "u2"], [["a", "x", "b"], ["a"]], scenarios=["f", "k"])
    assert out == [[("c", 1.0)], [("z", 0.0)]]  # u2 has no k item in its history: fallback
    assert calls == [("f", [["a", "b"]]), ("fallback", ["k"])]
    with pytest.raises(ValueError, match="needs scenarios"):
        router(["u1"], [["a"]])
