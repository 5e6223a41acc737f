"""LEARN twin towers: frozen encoder, loss falls, no valid/test leak, cold items retrievable, resume, save/load."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from alignrec.recommenders import LEARN, LEARNConfig, train_learn, training_windows
from recdata import RecDataset, leave_one_out_split
from recdata.cold_items import items_without_training
from recdata.errors import UserError
from tests.conftest import TINY_ITEMS, build_tiny_hf_tokenizer, build_tiny_llama
from tests.tokenization.test_embeddings_sasrec import _planted_split, _transitions

FAST = dict(learn_dim=16, learn_heads=2, learn_layers=1, learn_max_len=4, learn_batch_size=4, learn_lr=1e-2,
            learn_seed=0, learn_negatives=3)


def _content(n: int, dim: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("loss", ["softmax", "infonce"])
def test_training_lowers_loss_and_changes_params(tiny_split, loss, tmp_path):
    cfg = LEARNConfig(**FAST, learn_epochs=25, learn_patience=0, learn_dropout=0.0, learn_loss=loss)
    content = _content(8)
    torch.manual_seed(cfg.learn_seed)  # train_learn seeds then builds the model: same initial weights
    untrained = LEARN(tiny_split.dataset.item_ids(), content, cfg)
    log = tmp_path / "log.jsonl"
    model = train_learn(tiny_split, cfg, content, log_file=log)
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()]
    assert len(losses) == 25 and losses[-1] < 0.5 * losses[0]
    assert model.train_info["loss"] == loss
    changed = [name for name, p in model.named_parameters()
               if not torch.equal(p.detach(), dict(untrained.named_parameters())[name].detach())]
    assert {n.split(".")[0] for n in changed} >= {"item_tower", "user_adaptor", "blocks", "user_head"}
    np.testing.assert_array_equal(model.content[1:].numpy(), content)  # content vectors are never trained


def test_llm_encoder_weights_bit_identical_after_training(tiny_split):
    """The frozen LLM reads the item texts once; twin-tower training never touches its weights."""
    from tokenization.embeddings import mean_pool_hidden, render_catalogue

    tokenizer = build_tiny_hf_tokenizer()
    llm = build_tiny_llama(len(tokenizer))
    before = {k: v.clone() for k, v in llm.state_dict().items()}
    texts = render_catalogue({r["item_id"]: r for r in TINY_ITEMS}, tiny_split.dataset.item_ids(), "Title: {title}")
    content = mean_pool_hidden(llm, tokenizer, texts, batch_size=4, max_length=32)  # [8, 64]
    cfg = LEARNConfig(**FAST, learn_epochs=5, learn_patience=0)
    model = train_learn(tiny_split, cfg, content)
    llm_storage = {p.data_ptr() for p in llm.parameters()}
    assert not llm_storage & {p.data_ptr() for p in model.parameters()}
    assert all(p.requires_grad for p in llm.parameters())  # frozen by construction, not by a flag
    after = llm.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    np.testing.assert_array_equal(model.content[1:].numpy(), content)


def test_trains_only_on_training_part(monkeypatch):
    """Planted-leak test: every (prefix, target) the towers consume comes from train_sequences()."""
    split, planted = _planted_split("X")
    seen = []
    original = LEARN.training_loss

    def spy(self, inputs, targets, **kwargs):
        seen.append((inputs.clone(), targets.clone()))
        return original(self, inputs, targets, **kwargs)

    monkeypatch.setattr(LEARN, "training_loss", spy)
    n = len(split.dataset.item_ids())
    model = train_learn(split, LEARNConfig(**FAST, learn_epochs=3, learn_patience=5), _content(n))
    planted_idx = {model.index[i] for i in planted}
    consumed: Counter = Counter()
    for inputs, targets in seen:
        assert not planted_idx & set(inputs.flatten().tolist()), "a valid/test item was fed as input"
        assert not planted_idx & set(targets.flatten().tolist()), "a valid/test item was used as a target"
        consumed += _transitions(inputs, targets)
    expected = _transitions(*training_windows(split.train_sequences(), model.index, FAST["learn_max_len"]))
    assert consumed == Counter({k: 3 * v for k, v in expected.items()})


@pytest.mark.parametrize("loss", ["softmax", "infonce"])
def test_weights_independent_of_valid_and_test_targets(loss):
    """Two splits that differ only in their valid/test targets give identical towers (no early stopping)."""
    cfg = LEARNConfig(**FAST, learn_epochs=4, learn_patience=0, learn_dropout=0.0, learn_loss=loss)
    split_x, _ = _planted_split("X")
    split_y, _ = _planted_split("Y")
    assert split_x.dataset.item_ids() == split_y.dataset.item_ids()
    content = _content(len(split_x.dataset.item_ids()))
    a, b = train_learn(split_x, cfg, content), train_learn(split_y, cfg, content)
    np.testing.assert_array_equal(a.item_embeddings(), b.item_embeddings())


def _cold_twin_split():
    """Users walk a -> b -> c; ``b2`` has b's text but is only ever a test target: a cold item."""
    items = [{"item_id": i, "title": i} for i in ("a", "b", "c", "d", "e", "b2")]
    seqs = [{"user_id": f"u{u}", "item_ids": ["a", "b", "c", "d", "e"][: 3 + u % 3]} for u in range(12)]
    seqs.append({"user_id": "cold", "item_ids": ["d", "e", "a", "b2"]})
    ds = RecDataset.from_records(items, seqs, name="cold").validate()
    return leave_one_out_split(ds, max_history=20)


def test_cold_item_gets_a_finite_vector_and_is_retrieved():
    split = _cold_twin_split()
    assert items_without_training(split) == ["b2"]
    content = _content(6)
    content[5] = content[1]  # b2 reads exactly like b
    model = train_learn(split, LEARNConfig(**FAST, learn_epochs=30, learn_patience=0, learn_dropout=0.0), content)
    vectors = model.item_embeddings()
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[5], vectors[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    top = [item for item, _ in model.recommend([["a"]], k=2)[0]]
    assert set(top) == {"b", "b2"}  # learned a -> b carries over to the never-trained twin
    # a brand-new item (not in the catalogue) gets its vector from the item tower alone
    np.testing.assert_allclose(model.encode_content(content[1:2])[0], vectors[1], atol=1e-6)


def test_resume_from_checkpoint_matches_uninterrupted_run(tiny_split, tmp_path):
    content = _content(8)
    full = train_learn(tiny_split, LEARNConfig(**FAST, learn_epochs=6, learn_patience=10), content,
                       checkpoint_path=tmp_path / "a.pt")
    train_learn(tiny_split, LEARNConfig(**FAST, learn_epochs=3, learn_patience=10), content,
                checkpoint_path=tmp_path / "b.pt")  # "interrupted" after epoch 3
    resumed = train_learn(tiny_split, LEARNConfig(**FAST, learn_epochs=6, learn_patience=10), content,
                          checkpoint_path=tmp_path / "b.pt")
    np.testing.assert_array_equal(resumed.item_embeddings(), full.item_embeddings())
    assert resumed.train_info["epochs"] == 6
    assert resumed.train_info["best_valid_ndcg@10"] == full.train_info["best_valid_ndcg@10"]
    with pytest.raises(UserError, match="another config or data"):
        train_learn(tiny_split, LEARNConfig(**{**FAST, "learn_lr": 0.5}, learn_epochs=6), content,
                    checkpoint_path=tmp_path / "b.pt")


def test_save_load_roundtrip_and_errors(tiny_split, tmp_path):
    model = train_learn(tiny_split, LEARNConfig(**FAST, learn_epochs=2, learn_patience=0), _content(8))
    model.save_pretrained(tmp_path / "learn")
    loaded = LEARN.from_pretrained(tmp_path / "learn")
    assert loaded.item_ids == model.item_ids and loaded.cfg == model.cfg
    histories = [["i1", "i2"], ["i4", "i8", "i5", "i6", "i7"]]
    torch.testing.assert_close(loaded.score(histories), model.score(histories))
    assert [i for i, _ in model.recommend(histories, k=8)[0]] == [i for i, _ in loaded.recommend(histories, k=8)[0]]
    assert not {"i1", "i2"} & {i for i, _ in model.recommend(histories, k=8)[0]}
    with pytest.raises(FileNotFoundError, match="not a saved LEARN"):
        LEARN.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="item 'zz' is not in the catalogue of this LEARN"):
        model.recommend([["zz"]])
    with pytest.raises(ValueError, match=r"content must be \[num_items=8"):
        LEARN(model.item_ids, _content(7), model.cfg)
