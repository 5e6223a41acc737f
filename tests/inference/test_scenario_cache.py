"""Per-scenario caches: (user x scenario) top-K through build, publish and lookup; all vs active scenarios."""

from __future__ import annotations

import json

import pytest

from inference.cache import CacheReader, build_cache, iter_cache, publish_cache, read_manifest, scenario_users
from inference.cache.scenarios import scenario_key
from recdata import RecDataset, leave_one_out_split
from recdata.errors import UserError
from tests.inference.test_cache_cli import _cli

SCEN = {"a": "food", "b": "food", "c": "food", "x": "kitchen", "y": "kitchen", "z": "kitchen"}


@pytest.fixture
def scen_split():
    items = [{"item_id": i} for i in SCEN]
    seqs = [
        {"user_id": "u1", "item_ids": ["a", "x", "b", "y", "c"]},
        {"user_id": "u2", "item_ids": ["x", "y", "z"]},  # kitchen only
        {"user_id": "u3", "item_ids": ["x", "b", "y", "a", "c"]},
    ]
    seqs = [{**s, "scenarios": [SCEN[i] for i in s["item_ids"]]} for s in seqs]
    return leave_one_out_split(RecDataset.from_records(items, seqs).validate())


def _scripted(user_ids, histories, scenarios=None):
    """Every item of the asked scenario not in the history, in catalogue order (score = -position)."""
    out = []
    for history, scenario in zip(histories, scenarios, strict=True):
        items = [i for i in SCEN if SCEN[i] == scenario and i not in history]
        out.append([(i, -float(r)) for r, i in enumerate(items)])
    return out


def test_library_build_publish_lookup(tmp_path, scen_split):
    histories = scen_split.serving_histories()
    served = scenario_users(scen_split.user_scenarios(), scen_split.scenario_names(), "active")
    assert served == {"u1": ["food", "kitchen"], "u2": ["kitchen"], "u3": ["food", "kitchen"]}
    res = build_cache(_scripted, histories, tmp_path / "c", k=2, chunk_size=2, scenario_users=served, progress=False)
    assert res.manifest["num_users"] == 5 and res.manifest["scenarios"] == ["food", "kitchen"]
    keys = {u for u, _, _ in iter_cache(tmp_path / "c")}
    assert keys == {scenario_key(u, s) for u, names in served.items() for s in names}
    again = build_cache(_scripted, histories, tmp_path / "c", k=2, chunk_size=2, scenario_users=served,
                        progress=False)
    assert again.chunks_skipped == again.chunks_total  # resume works on (user, scenario) keys
    publish_cache(tmp_path / "c", tmp_path / "s", scenario_popularity=scen_split.train_scenario_popularity(),
                  progress=False)
    with CacheReader(tmp_path / "s") as reader:
        assert reader.scenarios == ["food", "kitchen"]
        got = reader.get("u1", "kitchen")
        assert got.items == [("z", -0.0)] and not got.fallback and got.scenario == "kitchen"
        assert [i for i, _ in reader.get("u3", "food").items] == []  # u3 bought every food item
        cold = reader.get("u2", "food")  # u2 is not served in food (active mode): the food fallback
        assert cold.fallback and {i for i, _ in cold.items} <= {"a", "b", "c"}
        assert cold.items == [("b", 2.0), ("a", 1.0)]  # training food counts (c was never bought in training)
        with pytest.raises(UserError, match="per scenario; pass a scenario"):
            reader.get("u1")
        with pytest.raises(UserError, match="scenario 'toys' is not in the cache"):
            reader.get("u1", "toys")


def test_all_vs_active_cost(scen_split):
    users = scen_split.user_scenarios()
    every = scenario_users(users, scen_split.scenario_names(), "all")
    active = scenario_users(users, scen_split.scenario_names(), "active")
    assert sum(map(len, every.values())) == 6 and sum(map(len, active.values())) == 5


def test_cli_popularity_per_scenario(tmp_path, scen_split, capsys):
    split_dir, out, store = tmp_path / "split", tmp_path / "cache", tmp_path / "store"
    scen_split.save(split_dir)
    assert _cli(["cache", "build", "--recommender", "popularity", "--split_dir", str(split_dir), "--out_dir", str(out),
                 "--k", "3", "--scenarios", "all"]) == 0
    assert read_manifest(out)["num_users"] == 6
    assert _cli(["cache", "publish", "--cache_dir", str(out), "--store_dir", str(store), "--split_dir",
                 str(split_dir)]) == 0
    capsys.readouterr()
    assert _cli(["cache", "get", "u2", "u1", "--store_dir", str(store), "--scenario", "food"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [ln["scenario"] for ln in lines] == ["food", "food"]
    assert all(SCEN[i] == "food" for ln in lines for i, _ in ln["items"])
    assert [i for i, _ in lines[0]["items"]] == ["b", "a", "c"]  # u2 has no food history: food by training count
    assert [i for i, _ in lines[1]["items"]] == []  # u1's serving history holds every food item
    with pytest.raises(UserError, match="per scenario"):
        _cli(["cache", "get", "u1", "--store_dir", str(store)])


def test_plain_cache_rejects_a_scenario(tmp_path, tiny_split):
    split_dir = tmp_path / "split"
    tiny_split.save(split_dir)
    with pytest.raises(UserError, match="has no scenario labels"):
        _cli(["cache", "build", "--recommender", "popularity", "--split_dir", str(split_dir), "--out_dir",
              str(tmp_path / "c"), "--scenarios", "active"])
    _cli(["cache", "build", "--recommender", "popularity", "--split_dir", str(split_dir), "--out_dir",
          str(tmp_path / "c"), "--k", "2"])
    publish_cache(tmp_path / "c", tmp_path / "s", progress=False)
    with CacheReader(tmp_path / "s") as reader:
        assert reader.scenarios == [] and not reader.get("u1").fallback
        with pytest.raises(UserError, match="this store has no scenarios"):
            reader.get("u1", "food")
