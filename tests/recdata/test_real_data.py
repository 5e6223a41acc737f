"""Issue 7 acceptance on real data (slow): exact counts of the shared Amazon sets and ML-100K 5-core,
leakage-free splits and exact save/load round trips."""

from __future__ import annotations

import pytest

from recdata import RecDataset, SplitDataset
from recdata.paths import ml100k_dir
from recdata.prepare import DataConfig, load_and_process, prepare_dataset
from tests.conftest import shared_dataset_dir

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "users", "items", "interactions"), [
    ("amazon18-scientific", 8317, 4344, 58492),
    ("amazon14-office", 4905, 2420, 53258),
])
def test_shared_amazon_counts_and_round_trip(tmp_path, name, users, items, interactions):
    cfg = DataConfig(path=str(shared_dataset_dir(name)))
    split = prepare_dataset(cfg)
    stats = split.dataset.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, interactions)
    assert set(split.dataset.drops) <= {"html_unescaped_fields"}  # already 5-core, no repeats
    train = dict(split.train_sequences())
    for part in ("valid", "test"):
        ex = split.eval_examples(part)
        assert len(ex) == users
        for user, history, target in zip(ex["user_id"], ex["history"], ex["target"], strict=True):
            assert target not in train[user] and len(history) <= 20
    split.save(tmp_path / "s")
    back = SplitDataset.load(tmp_path / "s")
    assert back.dataset.fingerprint() == split.dataset.fingerprint()
    assert back.eval_examples("test").to_list() == split.eval_examples("test").to_list()


def test_ml100k_5core_counts(tmp_path):
    path = ml100k_dir()
    if not (path / "ml-100k.inter").is_file():
        pytest.skip(f"ML-100K not installed at {path}")
    ds = load_and_process(DataConfig(path=str(path), kcore=5))
    assert (len(ds.sequences), len(ds.items), ds.num_interactions()) == (943, 1349, 99287)
    assert ds.drops == {"kcore_interactions": 713, "kcore_items": 333}
    assert ds.item_table()["1"]["title"] == "Toy Story (1995)"
    ds.save(tmp_path / "ml")
    assert RecDataset.load(tmp_path / "ml").fingerprint() == ds.fingerprint()
    split = prepare_dataset(DataConfig(path=str(path), kcore=5, split="temporal"))
    assert sum(len(s) for _, s in split.train_sequences()) + len(split.eval_examples("valid")) \
        + len(split.eval_examples("test")) == 99287
