"""``item_head_decode_weight``: evaluate, the cache and recommend decode a run with another item-head weight,
exactly as a run trained with that decode weight; unset, nothing changes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from inference.cache import CacheMismatchError, iter_cache, read_manifest
from inference.cli import EvaluateConfig
from tests.inference.test_cache_cli import _cli, _tiny_run

OWN, OVERRIDE = 0.7, 3.0  # the run's own decode weight (its manifest) and the evaluation-time override


def _head_run(path, tiny_dataset, hf_tok, model) -> None:
    """A full-model run folder with the shipped head layout: a cluster token, then the item's own token
    (tokenizer.item_id_level), so the head is a softmax over the catalogue."""
    _tiny_run(path, tiny_dataset, hf_tok, model, item_id_level=True)


def _set_head(run, decode_weight: float | None) -> None:
    """The manifest of a run trained with the item head at ``decode_weight`` (None: trained without one)."""
    from trainer.export import MANIFEST_FILE

    manifest = json.loads((run / MANIFEST_FILE).read_text())
    manifest.pop("item_head", None)
    if decode_weight is not None:
        manifest["item_head"] = {"loss_weight": 1.0, "decode_weight": decode_weight}
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.fixture
def runs(tmp_path, tiny_dataset, tiny_split, tiny_chat_tokenizer, tiny_llama):
    """Same weights three times: trained with the head at OWN, "trained" at OVERRIDE, and without a head."""
    own = tmp_path / "own"
    _head_run(own, tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    shutil.copytree(own, tmp_path / "trained_at_override")
    shutil.copytree(own, tmp_path / "no_head")
    _set_head(own, OWN)
    _set_head(tmp_path / "trained_at_override", OVERRIDE)
    _set_head(tmp_path / "no_head", None)
    tiny_split.save(tmp_path / "split")
    return {"own": own, "trained": tmp_path / "trained_at_override", "no_head": tmp_path / "no_head",
            "split": tmp_path / "split"}


def _rankings(fn, users, histories):
    return fn(users, histories)


def _same(got, want):
    for g, w in zip(got, want, strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        assert np.allclose([s for _, s in g], [s for _, s in w], atol=1e-5)


def test_evaluate_override_decodes_as_a_run_trained_with_it_and_unset_is_unchanged(runs, tmp_path, tiny_split,
                                                                                    monkeypatch):
    from alignrec.cli import main
    from inference.trained_run import TrainedRun

    seen = []
    original = TrainedRun.recommender

    def spy(self, *args, **kwargs):
        fn = original(self, *args, **kwargs)
        seen.append((kwargs.get("item_head_weight"), fn))
        return fn

    monkeypatch.setattr(TrainedRun, "recommender", spy)
    base = ["evaluate", "--split_dir", str(runs["split"]), "--part", "valid", "--ks", "1", "3", "--num_beams", "6",
            "--batch_size", "2", "--device", "cpu"]
    outs = {}
    for name, model, extra in [("override", "own", ["--item_head_decode_weight", str(OVERRIDE)]),
                               ("trained", "trained", []), ("unset", "own", [])]:
        outs[name] = tmp_path / f"eval_{name}"
        assert main([*base, "--model_dir", str(runs[model]), "--out_dir", str(outs[name]), *extra]) == 0
    assert [w for w, _ in seen] == [OVERRIDE, None, None]  # unset: the run's own, as before the key existed

    examples = tiny_split.eval_examples("valid")
    users, histories = list(examples["user_id"]), [list(h) for h in examples["history"]]
    monkeypatch.setattr(TrainedRun, "recommender", original)
    trained = TrainedRun.load(runs["trained"], device="cpu").recommender(3, 6, True, 2)
    own = TrainedRun.load(runs["own"], device="cpu").recommender(3, 6, True, 2)
    override_out = _rankings(seen[0][1], users, histories)
    _same(override_out, _rankings(trained, users, histories))  # the override == a run trained with that weight
    _same(_rankings(seen[2][1], users, histories), _rankings(own, users, histories))  # unset == the run's own
    assert [s for r in override_out for _, s in r] != [s for r in _rankings(own, users, histories) for _, s in r]

    metrics = {n: json.loads((o / "metrics.json").read_text()) for n, o in outs.items()}
    row = {n: {k: v for k, v in m["recommenders"]["alignrec"].items() if k != "timing"} for n, m in metrics.items()}
    assert row["override"] == row["trained"]
    assert metrics["override"]["config"]["EvaluateConfig"]["item_head_decode_weight"] == OVERRIDE
    assert metrics["unset"]["config"]["EvaluateConfig"]["item_head_decode_weight"] is None


def test_a_run_without_an_item_head_refuses_the_override_in_one_line(runs, tmp_path, capsys):
    from alignrec.cli import main

    out = tmp_path / "eval"
    rc = main(["evaluate", "--model_dir", str(runs["no_head"]), "--split_dir", str(runs["split"]), "--out_dir",
               str(out), "--item_head_decode_weight", "2", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "trained without an item head" in err[0] and not out.exists()
    rc = main(["cache", "build", "--model_dir", str(runs["no_head"]), "--split_dir", str(runs["split"]),
               "--out_dir", str(tmp_path / "c"), "--k", "3", "--item_head_decode_weight", "2", "--device", "cpu"])
    assert rc == 2 and "trained without an item head" in capsys.readouterr().err
    with pytest.raises(ValueError, match="item_head_decode_weight must be >= 0"):
        EvaluateConfig(model_dir="m", split_dir="s", out_dir="o", item_head_decode_weight=-1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"model_dir": "m", "item_head_decode_weight": -0.5}, "must be >= 0"),
    ({"recommender": "popularity", "item_head_decode_weight": 1.0}, "needs --recommender model"),
])
def test_cache_build_config_checks_the_override(kwargs, message):
    from inference.cache.cli import CacheBuildConfig

    with pytest.raises(ValueError, match=message):
        CacheBuildConfig(split_dir="s", out_dir="o", **kwargs)


def test_cache_build_serves_the_override_and_it_is_another_cache(runs, tmp_path, tiny_split):
    from inference.cache.model_recommender import model_identity
    from inference.trained_run import TrainedRun

    argv = ["cache", "build", "--model_dir", str(runs["own"]), "--split_dir", str(runs["split"]), "--out_dir",
            str(tmp_path / "c"), "--k", "3", "--num_beams", "8", "--chunk_size", "4", "--device", "cpu",
            "--item_head_decode_weight", str(OVERRIDE)]
    _cli(argv)
    assert read_manifest(tmp_path / "c")["model"].endswith(f"#item_head_decode_weight={OVERRIDE:g}")
    histories = tiny_split.serving_histories()
    users = sorted(histories)
    want = TrainedRun.load(runs["trained"], device="cpu").recommender(3, 8)(users, [histories[u] for u in users])
    got = {u: recs for u, _, recs in iter_cache(tmp_path / "c")}
    _same([got[u] for u in users], want)
    with pytest.raises(CacheMismatchError, match="model"):  # the run's own decoding into the same folder: refused
        _cli(argv[:-2])

    plain = model_identity(runs["own"])  # unset: the tag caches were built with before the key existed
    assert "#" not in plain["model"] and model_identity(runs["own"], 0.0, None) == plain
    assert model_identity(runs["own"], 0.0, 0.5) != model_identity(runs["own"], 0.0, 2.0) != plain


def test_recommend_decodes_with_the_override(runs, tiny_split):
    from inference.recommend_cli import RecommendArgs, recommend_for

    user = sorted(tiny_split.serving_histories())[0]
    args = {"user": user, "split_dir": str(runs["split"]), "k": 3, "num_beams": 8, "device": "cpu"}
    got = recommend_for(RecommendArgs(model_dir=str(runs["own"]), item_head_decode_weight=OVERRIDE, **args))
    want = recommend_for(RecommendArgs(model_dir=str(runs["trained"]), **args))
    assert got["recommendations"] == want["recommendations"]
