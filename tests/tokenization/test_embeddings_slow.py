"""Real models and data: MiniLM on a few items, SmolLM2 alignment targets, SASRec on amazon18-scientific."""

from __future__ import annotations

import numpy as np
import pytest

from alignrec.recommenders import full_ranking_metrics, train_sasrec
from tests.conftest import shared_dataset_dir
from tokenization.embeddings import (
    EmbeddingConfig,
    compute_item_embeddings,
    encode_sentence,
    l2_normalize,
    llm_text_targets,
)

pytestmark = pytest.mark.slow


def test_minilm_encodes_items_meaningfully(tiny_split, tmp_path):
    from recdata.paths import default_sentence_encoder_dir

    texts = ["Sterile pipette tips for lab pipettes", "Box of 1000 pipette tips", "White cotton lab coat"]
    vec = l2_normalize(encode_sentence(texts, default_sentence_encoder_dir(), batch_size=2))
    assert vec.shape == (3, 384)
    assert vec[0] @ vec[1] > vec[0] @ vec[2]
    emb = compute_item_embeddings(EmbeddingConfig(source="text", cache_dir=str(tmp_path)), tiny_split)
    assert emb.vectors.shape == (8, 384) and emb.item_ids == tiny_split.dataset.item_ids()


def test_smollm2_text_targets(tmp_path):
    from recdata.paths import default_llm_dir

    if not default_llm_dir().is_dir():
        pytest.skip(f"{default_llm_dir()} not converted yet")
    out = llm_text_targets(default_llm_dir(), ["Pipette tips", "Lab coat"], cache_dir=tmp_path)
    assert out.shape == (2, 576) and np.isfinite(out).all() and not np.allclose(out[0], out[1])


def test_sasrec_on_amazon18_scientific_beats_random():
    from recdata import leave_one_out_split
    from recdata.loaders import load_dataset

    split = leave_one_out_split(load_dataset(shared_dataset_dir("amazon18-scientific")), max_history=20)
    cfg = EmbeddingConfig(source="cf", sasrec_epochs=3, sasrec_patience=0).sasrec_config()
    model = train_sasrec(split, cfg)
    test = split.eval_examples("test")
    metrics = full_ranking_metrics(model, list(test["history"]), list(test["target"]))
    random_recall = 10 / len(model.item_ids)
    assert metrics["recall@10"] > 5 * random_recall, metrics
    assert model.item_embeddings().shape == (len(split.dataset.item_ids()), cfg.sasrec_dim)
