"""Dense recommenders' early stopping (SASRec, LEARN) ranks a seeded sample of valid users where ranking all of
them would dominate training (1M items), and every published size still ranks all of them; the cache keys ignore
the new fields at their neutral value so models cached before them still hit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from alignrec.recommenders import LEARNConfig, SASRecConfig, full_ranking_metrics, train_learn, train_sasrec
from alignrec.recommenders.valid_sample import early_stopping_users, model_key
from recdata.errors import ConfigError
from recdata.evaluation import sample_examples


@pytest.mark.parametrize(("valid_users", "users", "items", "expected"), [
    (0, 943, 1_682, 943),                  # ML-100K: all
    (0, 100_000, 100_000, 100_000),        # 1e10 scores: still all
    (0, 100_000, 1_000_000, 10_000),       # 1e11: 1e10 // 1M
    (0, 1_000_000, 1_000_000, 10_000),
    (0, 5_000, 10**11, 1),                 # never fewer than one user
    (0, 0, 1_000_000, 0),                  # no valid users
    (3, 5, 8, 3),                          # explicit: at most N
    (10, 5, 8, 5),
])
def test_early_stopping_users(valid_users, users, items, expected):
    assert early_stopping_users(valid_users, users, items) == expected


def test_negative_valid_users_is_refused():
    with pytest.raises(ValueError, match="sasrec_valid_users must be >= 0"):
        SASRecConfig(sasrec_valid_users=-1)
    with pytest.raises(ConfigError, match="learn_valid_users must be >= 0"):
        LEARNConfig(learn_valid_users=-1)


@pytest.mark.parametrize(("config", "prefix"), [(SASRecConfig, "sasrec"), (LEARNConfig, "learn")])
def test_cache_key_leaves_the_neutral_value_out(config, prefix):
    device, field = f"{prefix}_device", f"{prefix}_valid_users"
    default = model_key(config(**{device: "cuda"}), device)
    before_the_field = {k: v for k, v in dataclasses.asdict(config()).items() if k not in (device, field)}
    assert default == before_the_field  # the key a model cached before the field existed was stored under
    assert model_key(config(**{field: 500}), device) == {**before_the_field, field: 500}


def _cfg(**kw) -> SASRecConfig:
    return SASRecConfig(**{"sasrec_dim": 16, "sasrec_heads": 2, "sasrec_layers": 1, "sasrec_max_len": 4,
                           "sasrec_batch_size": 4, "sasrec_lr": 1e-2, "sasrec_seed": 3, "sasrec_epochs": 4,
                           "sasrec_patience": 4, **kw})


def test_sampled_early_stopping_selects_on_the_sampled_users(tiny_split, tmp_path):
    valid = tiny_split.eval_examples("valid")
    model = train_sasrec(tiny_split, _cfg(sasrec_valid_users=2), log_file=tmp_path / "log.jsonl")
    info = model.train_info
    assert (info["valid_users"], info["valid_users_of"]) == (2, len(valid))
    sampled = sample_examples(valid, 2, seed=3)
    assert len(sampled) == 2 and set(sampled["user_id"]) < set(valid["user_id"])
    # the restored weights are the best epoch's on the sampled users: their metric is the recorded best
    assert full_ranking_metrics(model, list(sampled["history"]), list(sampled["target"]))["ndcg@10"] == \
        pytest.approx(info["best_valid_ndcg@10"], abs=1e-12)


def test_auto_ranks_every_valid_user_on_a_small_catalogue(tiny_split):
    valid = tiny_split.eval_examples("valid")
    model = train_sasrec(tiny_split, _cfg())
    assert (model.train_info["valid_users"], model.train_info["valid_users_of"]) == (len(valid), len(valid))
    assert full_ranking_metrics(model, list(valid["history"]), list(valid["target"]))["ndcg@10"] == \
        pytest.approx(model.train_info["best_valid_ndcg@10"], abs=1e-12)


def test_learn_samples_its_early_stopping_users_too(tiny_split):
    valid = tiny_split.eval_examples("valid")
    content = np.random.default_rng(0).normal(size=(len(tiny_split.dataset.item_ids()), 12)).astype(np.float32)
    cfg = LEARNConfig(learn_dim=16, learn_heads=2, learn_layers=1, learn_max_len=4, learn_batch_size=4,
                      learn_lr=1e-2, learn_seed=5, learn_epochs=4, learn_patience=4, learn_valid_users=3)
    model = train_learn(tiny_split, cfg, content)
    assert (model.train_info["valid_users"], model.train_info["valid_users_of"]) == (3, len(valid))
    sampled = sample_examples(valid, 3, seed=5)
    assert full_ranking_metrics(model, list(sampled["history"]), list(sampled["target"]))["ndcg@10"] == \
        pytest.approx(model.train_info["best_valid_ndcg@10"], abs=1e-12)


def test_embeddings_stage_reports_valid_metrics_on_the_ranked_users(tiny_split):
    """The stage's summary ranks the users early stopping ranked (not all valid users once more), and says so."""
    from alignrec.pipeline.stages.embeddings import _selection_metrics

    model = train_sasrec(tiny_split, _cfg(sasrec_valid_users=2))
    valid = tiny_split.eval_examples("valid")
    sampled = sample_examples(valid, 2, seed=3)
    expected = {**full_ranking_metrics(model, list(sampled["history"]), list(sampled["target"]), k=10),
                "valid_users": 2, "valid_users_of": len(valid)}
    assert model.train_info["best_valid"]  # early stopping evaluated: the kept weights' own metrics are reused
    assert _selection_metrics(model, tiny_split, 2, 3) == pytest.approx(expected, abs=1e-12)
    # without early stopping's record (patience 0, nothing evaluated), the same users are ranked afresh
    model.train_info = {}
    assert _selection_metrics(model, tiny_split, 2, 3) == expected
    everyone = full_ranking_metrics(model, list(valid["history"]), list(valid["target"]), k=10)
    assert _selection_metrics(model, tiny_split, 0, 3) == {**everyone, "valid_users": len(valid),
                                                           "valid_users_of": len(valid)}


def test_best_valid_is_the_kept_weights_evaluation(tiny_split):
    model = train_sasrec(tiny_split, _cfg())
    valid = tiny_split.eval_examples("valid")
    again = full_ranking_metrics(model, list(valid["history"]), list(valid["target"]))
    assert model.train_info["best_valid"] == pytest.approx(again, abs=1e-12)
    assert model.train_info["best_valid"]["ndcg@10"] == model.train_info["best_valid_ndcg@10"]
    assert train_sasrec(tiny_split, _cfg(sasrec_patience=0)).train_info["best_valid"] == {}
