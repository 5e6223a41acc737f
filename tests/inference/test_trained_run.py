"""``TrainedRun``: a run's manifest decides how every consumer decodes it (the item head's weight here)."""

from __future__ import annotations

import json

import pytest

from tests.inference.test_cli import tiny_run  # noqa: F401  (patches trainer.load_for_inference)


def _record_head_weights(monkeypatch) -> list[float]:
    import inference.recommender

    seen: list[float] = []

    def fake_recommend(model, hf_tokenizer, item_tokenizer, prompts, k, num_beams, **kwargs):
        seen.append(kwargs["item_head_weight"])
        return [[] for _ in prompts]

    monkeypatch.setattr(inference.recommender, "recommend", fake_recommend)
    return seen


@pytest.mark.parametrize("manifest_weight", [0.0, 0.7])
def test_recommenders_decode_with_the_runs_item_head_unless_overridden(tiny_run, monkeypatch, manifest_weight):  # noqa: F811
    import trainer
    from inference import TrainedRun

    monkeypatch.setattr(trainer, "read_item_head_weight", lambda output_dir: manifest_weight)
    seen = _record_head_weights(monkeypatch)
    run = TrainedRun.load("run")
    run.recommender(1, 4)(["u1"], [["i1"]])
    run.recommender(1, 4, item_head_weight=2.0)(["u1"], [["i1"]])
    assert seen == [manifest_weight, 2.0]


def test_manifest_item_head_entry_is_read_back(tmp_path):
    from trainer.config import AlignRecTrainArguments
    from trainer.item_head import item_head_manifest, read_item_head_weight

    base = {"format_version": 1, "kind": "full"}
    (tmp_path / "alignrec_train.json").write_text(json.dumps(base))
    assert read_item_head_weight(tmp_path) == 0.0  # a run without a head decodes without one
    args = AlignRecTrainArguments(item_head_weight=0.5, item_head_decode_weight=1.5)
    (tmp_path / "alignrec_train.json").write_text(json.dumps({**base, **item_head_manifest(args)}))
    assert read_item_head_weight(tmp_path) == 1.5
    assert item_head_manifest(AlignRecTrainArguments(item_head_decode_weight=1.5)) == {}
