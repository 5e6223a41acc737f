"""SASRec: training windows, training lowers the loss, no valid/test leak, recommend, metrics, save/load."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from alignrec.recommenders import SASRec, SASRecConfig, full_ranking_metrics, train_sasrec, training_windows
from recdata import RecDataset, leave_one_out_split

FAST = dict(sasrec_dim=16, sasrec_heads=2, sasrec_layers=1, sasrec_max_len=4, sasrec_batch_size=4,
            sasrec_lr=1e-2, sasrec_seed=0)


def test_training_windows_exact():
    index = {c: i + 1 for i, c in enumerate("abcdefg")}
    inputs, targets = training_windows([("u1", list("abcdefg")), ("u2", list("ab")), ("u3", ["c"])], index, 3)
    # u1 is cut from its end: a window of max_len inputs, then the remainder; every transition once.
    assert inputs.tolist() == [[4, 5, 6], [1, 2, 3], [1, 0, 0]]
    assert targets.tolist() == [[5, 6, 7], [2, 3, 4], [2, 0, 0]]


def test_training_windows_unknown_item():
    with pytest.raises(ValueError, match="user 'u1': item 'z' is not in the catalogue"):
        training_windows([("u1", ["a", "z"])], {"a": 1}, 3)


def _transitions(inputs: torch.Tensor, targets: torch.Tensor) -> Counter:
    """(causal prefix, target) pairs a batch trains on, padding removed."""
    out: Counter = Counter()
    for x, y in zip(inputs.tolist(), targets.tolist(), strict=True):
        for pos, target in enumerate(y):
            if target:
                out[(tuple(i for i in x[:pos + 1] if i), target)] += 1
    return out


def _planted_split(variant: str):
    """Training prefixes identical across variants; valid/test targets are planted items seen nowhere else."""
    base = [["a", "b", "c", "d"], ["b", "c", "e"], ["a", "e", "d", "b", "c"], ["d", "a"], ["c", "e", "a"]]
    planted = [f"{p}{variant}{u}" for u in range(len(base)) for p in ("v", "t")]
    catalogue = list("abcde") + [f"{p}{v}{u}" for v in ("X", "Y") for u in range(len(base)) for p in ("v", "t")]
    seqs = [{"user_id": f"u{u}", "item_ids": items + [f"v{variant}{u}", f"t{variant}{u}"]} for u, items in enumerate(base)]
    ds = RecDataset.from_records([{"item_id": i, "title": i} for i in catalogue], seqs, name="planted").validate()
    return leave_one_out_split(ds, max_history=20), set(planted)


def test_sasrec_trains_only_on_training_part(monkeypatch):
    """Planted leak test: every (prefix, target) the model consumes comes from train_sequences()."""
    split, planted = _planted_split("X")
    seen = []
    original = SASRec.training_loss

    def spy(self, inputs, targets):
        seen.append((inputs.clone(), targets.clone()))
        return original(self, inputs, targets)

    monkeypatch.setattr(SASRec, "training_loss", spy)
    model = train_sasrec(split, SASRecConfig(**FAST, sasrec_epochs=3, sasrec_patience=5))
    planted_idx = {model.index[i] for i in planted}
    consumed: Counter = Counter()
    for inputs, targets in seen:
        assert not planted_idx & set(inputs.flatten().tolist()), "a valid/test item was fed as input"
        assert not planted_idx & set(targets.flatten().tolist()), "a valid/test item was used as a target"
        consumed += _transitions(inputs, targets)
    expected = _transitions(*training_windows(split.train_sequences(), model.index, FAST["sasrec_max_len"]))
    assert consumed == Counter({k: 3 * v for k, v in expected.items()})  # 3 epochs, each transition once


def test_sasrec_embeddings_independent_of_valid_and_test_items():
    """Two splits that differ only in their valid/test targets must give identical weights (no early stop)."""
    cfg = SASRecConfig(**FAST, sasrec_epochs=4, sasrec_patience=0, sasrec_dropout=0.0)
    split_x, _ = _planted_split("X")
    split_y, _ = _planted_split("Y")
    assert split_x.train_sequences() == split_y.train_sequences()
    emb_x = train_sasrec(split_x, cfg).item_embeddings()
    emb_y = train_sasrec(split_y, cfg).item_embeddings()
    np.testing.assert_array_equal(emb_x, emb_y)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_sasrec_training_lowers_loss_and_changes_params(tiny_split, loss, tmp_path):
    cfg = SASRecConfig(**FAST, sasrec_epochs=30, sasrec_patience=0, sasrec_dropout=0.0, sasrec_loss=loss)
    torch.manual_seed(cfg.sasrec_seed)  # train_sasrec seeds then builds the model: same initial weights
    untrained = SASRec(tiny_split.dataset.item_ids(), cfg)
    log = tmp_path / "log.jsonl"
    model = train_sasrec(tiny_split, cfg, log_file=log)
    import json

    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()]
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0]
    assert not np.allclose(model.item_embeddings(), untrained.item_embeddings())


def test_early_stopping_restores_best_valid_weights(tiny_split, tmp_path):
    cfg = SASRecConfig(**FAST, sasrec_epochs=40, sasrec_patience=3)
    log = tmp_path / "log.jsonl"
    model = train_sasrec(tiny_split, cfg, log_file=log)
    import json

    records = [json.loads(line) for line in log.read_text().splitlines()]
    best = max(r["valid_ndcg@10"] for r in records)
    assert model.train_info["best_valid_ndcg@10"] == best
    valid = tiny_split.eval_examples("valid")
    metrics = full_ranking_metrics(model, list(valid["history"]), list(valid["target"]))
    assert metrics["ndcg@10"] == pytest.approx(best)
    assert len(records) < 40 or records[-1]["valid_ndcg@10"] <= best


def test_full_ranking_metrics_exact(tiny_split, monkeypatch):
    model = SASRec(tiny_split.dataset.item_ids(), SASRecConfig(**FAST))
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],   # target i1 ranked 0
                           [0.9, 0.8, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0]])  # target i3 ranked 2
    monkeypatch.setattr(model, "score", lambda histories: scores.clone())
    out = full_ranking_metrics(model, [["i2"], ["i2"]], ["i1", "i3"], k=2, exclude_history=False)
    assert out == {"recall@2": 0.5, "ndcg@2": 0.5}
    out = full_ranking_metrics(model, [["i2"], ["i2"]], ["i1", "i3"], k=3, exclude_history=False)
    assert out["recall@3"] == 1.0 and out["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 2)
    # the default masks history items (as evaluation and the cache do): i2 leaves, i3 moves up to rank 1
    out = full_ranking_metrics(model, [["i2"], ["i2"]], ["i1", "i3"], k=2)
    assert out["recall@2"] == 1.0 and out["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    # all tied: catalogue order (recdata.metrics' tie rule, the order recommend lists them in); i2 is left out
    monkeypatch.setattr(model, "score", lambda histories: torch.zeros(len(histories), 8))
    assert full_ranking_metrics(model, [["i2"]], ["i3"], k=1) == {"recall@1": 0.0, "ndcg@1": 0.0}
    out = full_ranking_metrics(model, [["i2"]], ["i3"], k=2)
    assert out == {"recall@2": 1.0, "ndcg@2": pytest.approx(1 / math.log2(3))}
    assert [i for i, _ in model.recommend([["i2"]], k=2)[0]] == ["i1", "i3"]


def test_recommend_matches_scores_and_excludes_history(tiny_split):
    model = SASRec(tiny_split.dataset.item_ids(), SASRecConfig(**FAST))
    histories = [["i1", "i2", "i3"], ["i8"]]
    scores = model.score(histories)
    recs = model.recommend(histories, k=8, exclude_history=False)
    for row, rec in enumerate(recs):
        order = scores[row].argsort(descending=True).tolist()
        assert [item for item, _ in rec] == [model.item_ids[i] for i in order]
        assert [s for _, s in rec] == pytest.approx(scores[row][order].tolist())
    excluded = model.recommend(histories, k=8, exclude_history=True)
    assert [len(r) for r in excluded] == [5, 7]
    assert not {"i1", "i2", "i3"} & {item for item, _ in excluded[0]}
    # a history longer than max_len scores from its last max_len items
    long = ["i5", "i6", "i1", "i2", "i3", "i4"]
    torch.testing.assert_close(model.score([long]), model.score([long[-4:]]))
    with pytest.raises(ValueError, match="item 'zz' is not in the catalogue of this SASRec"):
        model.recommend([["zz"]], k=2)
    with pytest.raises(ValueError, match="history 0 is empty"):
        model.recommend([[]], k=2)


def test_save_load_roundtrip(tiny_split, tmp_path):
    model = train_sasrec(tiny_split, SASRecConfig(**FAST, sasrec_epochs=2, sasrec_patience=0))
    model.save_pretrained(tmp_path / "sasrec")
    loaded = SASRec.from_pretrained(tmp_path / "sasrec")
    assert loaded.item_ids == model.item_ids and loaded.cfg == model.cfg
    histories = [["i1", "i2"], ["i4", "i8", "i5"]]
    torch.testing.assert_close(loaded.score(histories), model.score(histories))
    with pytest.raises(FileNotFoundError, match="not a saved SASRec"):
        SASRec.from_pretrained(tmp_path)
