"""``evaluate.text_retriever_baseline`` in ``alignrec run``: existing runs keep their keys, the row reads the run's
own text vectors when the embeddings stage wrote MiniLM ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignrec.pipeline.runner import StageContext, plan_stages
from alignrec.pipeline.stages import STAGES
from alignrec.pipeline.stages.evaluate import _text_vectors
from alignrec.pipeline.variants import apply_overrides
from recdata.item_vectors import ItemEmbeddings
from recdata.paths import default_sentence_encoder_dir
from tests.pipeline.test_stage_keys_stable import KEYS_NOW, run_folder  # noqa: F401 (fixture)


def _keys(run_cfg) -> dict[str, str]:
    return {p.name: p.key for p in plan_stages(STAGES, run_cfg.run_dir, run_cfg.sections, run_cfg)}


def test_the_key_changes_only_the_runs_that_set_it(run_folder):  # noqa: F811
    assert _keys(run_folder) == KEYS_NOW  # the field exists with its default: no key moved
    on = apply_overrides(run_folder, {"evaluate.text_retriever_baseline": True})
    after = _keys(on)
    assert [name for name in KEYS_NOW if after[name] != KEYS_NOW[name]] == ["evaluate"]  # nothing reads it
    plan = next(p for p in plan_stages(STAGES, on.run_dir, on.sections, on) if p.name == "evaluate")
    assert plan.input_paths == {"text_retriever_encoder": str(default_sentence_encoder_dir())}


def _ctx(tmp_path, sections, kind):
    emb = tmp_path / "embeddings"
    emb.mkdir()
    np.save(emb / "vectors.npy", np.eye(3, dtype=np.float32))
    (emb / "item_ids.json").write_text(json.dumps(["i1", "i2", "i3"]))
    (emb / "meta.json").write_text(json.dumps({"kind": kind}))
    run_cfg = type("Run", (), {"sections": sections})()
    dirs = {name: tmp_path / name for name in ("data", "knowledge", "embeddings")}
    return StageContext(tmp_path, tmp_path / "evaluate", sections.get("evaluate", {}), run_cfg, dirs)


def test_minilm_stage_vectors_are_read_as_they_are(tmp_path, monkeypatch):
    import inference.text_retriever as text_retriever

    monkeypatch.setattr(text_retriever, "sentence_text_vectors", lambda *a, **k: pytest.fail("encoded again"))
    vectors = _text_vectors(_ctx(tmp_path, {"embeddings": {"source": "text"}}, "text-sentence"), "unused")
    assert vectors.item_ids == ["i1", "i2", "i3"] and np.array_equal(vectors.vectors, np.eye(3))


def test_other_stage_vectors_encode_the_sections_text_with_minilm(tmp_path, monkeypatch):
    import inference.text_retriever as text_retriever
    import recdata

    seen = {}

    def fake(split, embedding_config=None, encoder_dir=""):
        seen.update(split=split, cfg=embedding_config)
        return ItemEmbeddings(["i1"], np.ones((1, 2)))

    monkeypatch.setattr(text_retriever, "sentence_text_vectors", fake)
    monkeypatch.setattr(recdata.SplitDataset, "load", classmethod(lambda cls, path: f"split at {path}"))
    section = {"source": "fused", "fusion_weights": "text=1.0,cf=1.0", "text_encoder": "llm", "text_max_length": 64,
               "sasrec_baseline": True}  # a pipeline-only key is dropped before parsing
    _text_vectors(_ctx(tmp_path, {"embeddings": section}, "fused"), "S")
    assert seen["split"] == "split at S"
    assert (seen["cfg"].source, seen["cfg"].text_max_length) == ("fused", 64)  # sentence_text_vectors forces MiniLM
