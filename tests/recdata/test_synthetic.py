"""recdata.synthetic / scripts/make_synthetic.py: seeded bytes, exact sizes, Zipf head, a learnable next-item
structure, a round trip through the real data stage, and refusal of folders the generator did not write."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recdata.errors import ConfigError, OutputFolderError
from recdata.synthetic import (
    USERS_PER_BLOCK,
    SyntheticConfig,
    SyntheticWorld,
    generate_synthetic,
    remove_synthetic,
    user_histories,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_synthetic.py"


def _generate(path: Path, **kwargs) -> dict:
    return generate_synthetic(SyntheticConfig(out_dir=str(path), **kwargs), progress=False)


def _sequences(path: Path) -> dict[str, list[str]]:
    table = pq.read_table(path / "interactions.parquet").to_pydict()
    seqs: dict[str, list[str]] = defaultdict(list)
    for user, item in zip(table["user_id"], table["item_id"], strict=True):
        seqs[user].append(item)
    return seqs


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = {"num_items": 120, "num_users": USERS_PER_BLOCK + 7, "interactions_per_user": 4}  # two user blocks
    a = _generate(tmp_path / "a", **kwargs)
    b = _generate(tmp_path / "b", **kwargs)
    c = _generate(tmp_path / "c", seed=1, **kwargs)
    for name in ("items.parquet", "interactions.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["sha256"] == b["sha256"]
    assert a["sha256"]["interactions.parquet"] != c["sha256"]["interactions.parquet"]
    assert pq.ParquetFile(tmp_path / "a" / "interactions.parquet").num_row_groups == 2  # streamed, a group a block


def test_sizes_are_exact_and_histories_well_formed(tmp_path):
    cfg = SyntheticConfig(out_dir=str(tmp_path / "d"), num_items=500, num_users=300, interactions_per_user=9,
                          num_scenarios=3)
    manifest = generate_synthetic(cfg, progress=False)
    items = pq.read_table(tmp_path / "d" / "items.parquet").to_pydict()
    assert items["item_id"] == [f"i{i}" for i in range(500)]
    assert sorted(set(items["scenario"])) == ["S0", "S1", "S2"]
    assert all(items[col][0] for col in ("title", "categories", "description"))
    table = pq.read_table(tmp_path / "d" / "interactions.parquet").to_pydict()
    seqs = _sequences(tmp_path / "d")
    assert list(seqs) == [f"u{u}" for u in range(300)]  # users in order, each one contiguous run
    assert (manifest["items"], manifest["users"], manifest["interactions"]) == (500, 300, len(table["item_id"]))
    low, high = cfg.length_range()
    assert (low, high) == (4, 14)
    lengths = [len(s) for s in seqs.values()]
    assert min(lengths) >= low and max(lengths) <= high and abs(np.mean(lengths) - 9) < 1.0
    assert all(len(set(s)) == len(s) for s in seqs.values())  # no repeats: dedup drops nothing
    assert set(table["item_id"]) <= set(items["item_id"])
    times: dict[str, list[int]] = defaultdict(list)
    for user, t in zip(table["user_id"], table["timestamp"], strict=True):
        times[user].append(t)
    assert all(all(b > a for a, b in zip(ts[:-1], ts[1:], strict=True)) for ts in times.values())


def test_zipf_head(tmp_path):
    """Pure popularity draws follow the Zipf weights; the planted mix keeps a head far above uniform."""
    def top_share(**kwargs) -> tuple[float, float]:
        cfg = SyntheticConfig(out_dir="unused", num_items=1000, num_users=4000, interactions_per_user=10, **kwargs)
        world = SyntheticWorld(cfg)
        hist, _ = user_histories(world, 0)
        counts = np.bincount(hist[hist >= 0], minlength=1000)
        expected = np.sort(world.weight)[::-1][:10].sum() / world.weight.sum()  # Zipf share of the top 1%
        return float(np.sort(counts)[::-1][:10].sum() / counts.sum()), float(expected)

    pure, expected = top_share(chain_prob=0.0, cluster_prob=0.0)
    assert 0.7 * expected < pure <= expected  # no-repeat redraws shave the head a little, never add to it
    planted, _ = top_share()
    flat, _ = top_share(zipf_exponent=0.0)
    steep, _ = top_share(zipf_exponent=1.5)
    assert planted > 10 * 0.01 and flat < 0.04 and steep > planted  # top 1% of items vs a uniform 1%


def _hit_rates(seqs: list[list[int]]) -> tuple[float, float]:
    """HR@10 on each user's last item: popularity vs first-order Markov counts from the earlier items."""
    popularity: Counter = Counter()
    transitions: dict[int, Counter] = defaultdict(Counter)
    for seq in seqs:
        popularity.update(seq[:-1])
        for a, b in zip(seq[:-2], seq[1:-1], strict=True):
            transitions[a][b] += 1
    top = {i for i, _ in popularity.most_common(10)}
    pop_hits = sum(seq[-1] in top for seq in seqs)
    markov_hits = sum(seq[-1] in {i for i, _ in transitions[seq[-2]].most_common(10)} for seq in seqs)
    return pop_hits / len(seqs), markov_hits / len(seqs)


@pytest.mark.parametrize("planted", [True, False])
def test_planted_structure_is_learnable(planted):
    probs = {} if planted else {"chain_prob": 0.0, "cluster_prob": 0.0}
    cfg = SyntheticConfig(out_dir="unused", num_items=400, num_users=3000, interactions_per_user=10, seed=3, **probs)
    hist, lengths = user_histories(SyntheticWorld(cfg), 0)
    pop, markov = _hit_rates([row[:n].tolist() for row, n in zip(hist, lengths, strict=True)])
    if planted:
        assert markov > pop + 0.3, (pop, markov)
    else:  # control: without the planted steps the previous item says nothing
        assert markov < pop + 0.05, (pop, markov)


def test_titles_follow_the_latent_cluster():
    cfg = SyntheticConfig(out_dir="unused", num_items=400, num_users=10, num_clusters=20)
    world = SyntheticWorld(cfg)
    table = world.item_table(0, 400).to_pydict()
    stems = [" ".join(t.split()[:-1]) for t in table["title"]]  # the title without the item's own number
    by_cluster: dict[int, set[str]] = defaultdict(set)
    for stem, cluster in zip(stems, world.cluster.tolist(), strict=True):
        by_cluster[cluster].add(stem)
    assert all(len(s) == 1 for s in by_cluster.values()) and len({next(iter(s)) for s in by_cluster.values()}) == 20
    # the chain visits every item of its cluster once
    for c in range(20):
        members = set(np.flatnonzero(world.cluster == c).tolist())
        start, seen = next(iter(members)), []
        item = start
        for _ in members:
            seen.append(item)
            item = int(world.successor[item])
        assert item == start and set(seen) == members


def test_round_trip_through_the_data_stage(tmp_path):
    from recdata import SplitDataset, detect_format
    from recdata.cli import PrepareArgs, run_prepare
    from recdata.prepare import DataConfig

    manifest = _generate(tmp_path / "synth", num_items=80, num_users=60, interactions_per_user=6, num_scenarios=2)
    assert detect_format(tmp_path / "synth") == "tabular"
    cfg = DataConfig(path=str(tmp_path / "synth"), keep_unused_items=True, scenario_item_field="scenario")
    stats = run_prepare(cfg, PrepareArgs(output_dir=str(tmp_path / "split")))
    assert (stats["users"], stats["items"], stats["interactions"]) == (60, 80, manifest["interactions"])
    assert stats["drops"] == {}
    split = SplitDataset.load(tmp_path / "split")
    assert split.has_scenarios
    seqs = _sequences(tmp_path / "synth")
    test = split.eval_examples("test")
    assert {u: t for u, t in zip(test["user_id"], test["target"], strict=True)} == {u: s[-1] for u, s in seqs.items()}


def test_refuses_foreign_folders_keeps_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError, match="not written by make_synthetic"):
        _generate(foreign, num_items=40, num_users=5, interactions_per_user=4)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        _generate(tmp_path / "file", num_items=40, num_users=5, interactions_per_user=4)

    out = tmp_path / "synth"
    _generate(out, num_items=40, num_users=5, interactions_per_user=4)
    stamp = (out / "interactions.parquet").stat().st_mtime_ns
    _generate(out, num_items=40, num_users=5, interactions_per_user=4)  # same config: kept as it is
    assert (out / "interactions.parquet").stat().st_mtime_ns == stamp
    replaced = _generate(out, num_items=40, num_users=6, interactions_per_user=4)  # ours, other config: replaced
    assert json.loads((out / "synthetic.json").read_text())["users"] == replaced["users"] == 6
    assert len(_sequences(out)) == 6
    (out / "notes.txt").write_text("keep me")  # ours, but now holding a user's file: neither replaced nor removed
    with pytest.raises(OutputFolderError, match=r"also holds \['notes.txt'\]"):
        _generate(out, num_items=40, num_users=7, interactions_per_user=4)
    with pytest.raises(OutputFolderError, match="also holds"):
        remove_synthetic(out)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "interactions.parquet").is_file()
    (out / "notes.txt").unlink()
    remove_synthetic(out)  # only its own files, then the empty folder
    assert not out.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"interactions_per_user": 2}, "interactions_per_user must be >= 3"),
    ({"num_items": 20, "interactions_per_user": 10}, "use num_items >= 30"),
    ({"chain_prob": 0.8, "cluster_prob": 0.3}, "sum <= 1"),
])
def test_bad_config_names_the_field_and_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticConfig(out_dir="x", **kwargs)


def test_cli_writes_and_reports_a_foreign_folder(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cli"
    assert module.main(["--out_dir", str(out), "--num_items", "50", "--num_users", "7",
                        "--interactions_per_user", "4"]) == 0
    assert json.loads((out / "synthetic.json").read_text())["users"] == 7
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "a.txt").write_text("x")
    capsys.readouterr()
    assert module.main(["--out_dir", str(tmp_path / "foreign"), "--num_items", "50",
                        "--interactions_per_user", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written by make_synthetic" in err[0]
    assert module.main(["--out_dir", str(tmp_path / "new"), "--num_items", "50"]) == 2  # a bad value: exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use num_items >= 60" in err[0]
