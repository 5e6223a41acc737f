"""``item_vector_prior_weight``: the content prior in the item head equals a brute-force numpy reference, steers the
beam exactly as a bias in the head's logits would, changes nothing at weight 0 (or for an empty history), and is
refused clearly without an item head."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from inference.beam_search import constrained_beam_search, sequence_log_probs
from inference.item_head_scores import ItemHeadScores, head_columns, item_head_bias
from inference.item_prior import ItemVectorPrior, load_item_prior, resolve_item_vectors_dir
from inference.trie import ItemTrie
from recdata.item_vectors import ItemEmbeddings
from tests.inference.test_beam_search import _assert_same_ranking, _item_id_model, _setup
from tests.inference.test_cache_cli import _cli
from tests.inference.test_item_head_override import _head_run, _set_head


def reference_bias(catalogue, vec_ids, vectors, histories, weight) -> np.ndarray:
    """``[rows, items]`` weight * cos(unit mean of the history's unit vectors, unit item vector), in float64; items
    without a (non-zero) vector get 0 and are skipped in histories; no usable history item: a zero row."""
    unit = {i: v / np.linalg.norm(v) for i, v in zip(vec_ids, np.asarray(vectors, np.float64), strict=True)
            if np.linalg.norm(v) > 0}
    out = np.zeros((len(histories), len(catalogue)))
    for b, history in enumerate(histories):
        kept = [unit[i] for i in history if i in unit]
        if not kept or np.linalg.norm(np.mean(kept, axis=0)) == 0:
            continue
        u = np.mean(kept, axis=0) / np.linalg.norm(np.mean(kept, axis=0))
        out[b] = [weight * float(u @ unit[i]) if i in unit else 0.0 for i in catalogue]
    return out


def _vectors(n: int, dim: int = 6, seed: int = 0):
    """Vectors for items 0..n-1 except item 1 (none) and item 2 (zero), plus one id outside the catalogue."""
    rng = np.random.default_rng(seed)
    ids = [f"item{i}" for i in range(n) if i != 1] + ["stranger"]
    vectors = rng.normal(size=(len(ids), dim)).astype(np.float32)
    vectors[ids.index("item2")] = 0.0
    return ItemEmbeddings(ids, vectors)


HISTORIES = [["item0", "item3", "item3"],  # a repeat counts twice
             ["item1", "item2", "item4"],  # no vector, a zero vector: skipped
             [],  # empty: no prior
             ["item1", "item2"]]  # nothing usable: no prior


def _trie(layout: str, n: int = 40) -> ItemTrie:
    rng = np.random.default_rng(1)
    ids = np.arange(n) + 200
    if layout == "permuted":
        ids = rng.permutation(ids)
    elif layout == "gaps":  # not one block: the head gathers its columns
        ids = np.sort(rng.choice(np.arange(200, 300), size=n, replace=False))
    return ItemTrie(np.concatenate([rng.integers(0, 4, size=(n, 1)) + 100, ids[:, None]], 1))


@pytest.mark.parametrize("layout", ["contiguous", "permuted", "gaps"])
def test_bias_equals_the_numpy_reference_and_acts_as_a_shift_of_the_head_logits(layout, monkeypatch):
    trie = _trie(layout)
    catalogue = [f"item{i}" for i in range(trie.num_items)]
    emb = _vectors(trie.num_items)
    rows_of = [[catalogue.index(i) for i in h] for h in HISTORIES]
    prior = ItemVectorPrior(trie, catalogue, emb, 1.7).rows(rows_of)
    want = reference_bias(catalogue, emb.item_ids, emb.vectors, HISTORIES, 1.7)  # [rows, items]
    _, _, items = head_columns(trie)
    dense = torch.zeros(len(HISTORIES), trie.num_items)
    dense[:, items] = prior.columns(0, trie.num_items)  # head column order -> item order
    assert np.allclose(dense.numpy(), want, atol=1e-6, rtol=0)
    assert not dense[2:].any() and not dense[:, [1, 2]].any()  # empty / unusable history, items without a vector
    row = torch.arange(len(HISTORIES)).repeat_interleave(trie.num_items)
    item = torch.arange(trie.num_items).repeat(len(HISTORIES))
    per_edge = prior.items(row, item, block=1)  # one gathered edge per chunk
    assert np.allclose(per_edge.view(len(HISTORIES), -1).numpy(), want, atol=1e-6, rtol=0)

    logits = torch.randn(len(HISTORIES), 320, generator=torch.Generator().manual_seed(2)) * 3
    shifted = logits.clone()
    shifted[:, trie.leaf_tokens()] += torch.from_numpy(want).float()  # the prior, written into the head's logits
    monkeypatch.setattr(ItemHeadScores, "COLUMN_BLOCK", 16)  # several column blocks, the last one short
    original = logits.clone()
    got = item_head_bias(trie, logits, 0.6, prior)
    assert torch.equal(logits, original)  # log p(codes) reads the logits: the prior never writes into them
    for g, e in zip(got, item_head_bias(trie, shifted, 0.6), strict=True):
        assert torch.allclose(g, e, atol=1e-5, rtol=0)


def test_query_rows_equal_weight_times_cosine_with_the_query_and_the_history_path_at_its_mean():
    """Explicit query vectors (a request's sentence vector): weight x cos(query, item) exactly; a zero query gets no
    prior; the unit history mean as the query gives the history path's rows bit for bit."""
    trie = _trie("permuted")
    catalogue = [f"item{i}" for i in range(trie.num_items)]
    emb = _vectors(trie.num_items)
    prior = ItemVectorPrior(trie, catalogue, emb, 2.5)
    rng = np.random.default_rng(9)
    queries = rng.normal(size=(3, emb.dim)).astype(np.float32)
    queries[1] = 0.0
    _, _, items = head_columns(trie)
    dense = torch.zeros(3, trie.num_items)
    dense[:, items] = prior.query_rows(queries).columns(0, trie.num_items)
    unit = {i: v / np.linalg.norm(v) for i, v in zip(emb.item_ids, emb.vectors.astype(np.float64), strict=True)
            if np.linalg.norm(v) > 0}
    want = np.array([[2.5 * float(q @ unit[i]) / np.linalg.norm(q) if i in unit and q.any() else 0.0
                      for i in catalogue] for q in queries.astype(np.float64)])
    assert np.allclose(dense.numpy(), want, atol=1e-6, rtol=0) and not dense[1].any()
    history_rows = prior.rows([[catalogue.index(i) for i in h] for h in HISTORIES[:1]])
    via_query = prior.query_rows(history_rows.users.numpy())  # the (weighted) unit mean is itself a query
    assert torch.allclose(via_query.users, history_rows.users, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"queries must be \[batch, 6\]"):
        prior.query_rows(queries[:, :4])


def test_beam_search_ranks_by_code_log_prob_plus_the_head_with_the_prior(prompts):
    model, trie, token_ids, input_ids, mask = _setup(_item_id_model("llama"), prompts)
    catalogue = [f"item{i}" for i in range(trie.num_items)]
    emb = _vectors(trie.num_items, seed=3)
    histories = HISTORIES[:3]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        last = model(input_ids=input_ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    bias = torch.from_numpy(reference_bias(catalogue, emb.item_ids, emb.vectors, histories, 4.0)).float()
    head = torch.log_softmax(last[:, token_ids[:, -1]] + bias, dim=-1)  # brute force: the biased head
    fused = sequence_log_probs(model, input_ids, mask, token_ids) + 0.6 * head
    prior = ItemVectorPrior(trie, catalogue, emb, 4.0)
    rows = prior.rows([[catalogue.index(i) for i in h] for h in histories])
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items, item_head_weight=0.6,
                                  item_prior=rows)
    plain = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items, item_head_weight=0.6)
    assert out.items[:2].tolist() != plain.items[:2].tolist()  # the prior really changes the ranking
    for row in range(len(prompts)):
        _assert_same_ranking(out.items[row], out.scores[row], fused[row])
    assert torch.equal(out.items[2], plain.items[2]) and torch.equal(out.scores[2], plain.scores[2])  # empty history
    with pytest.raises(ValueError, match="item_head_weight"):
        constrained_beam_search(model, input_ids, mask, trie, num_beams=3, item_prior=rows)


def _write_vectors(folder, emb: ItemEmbeddings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", emb.vectors)
    (folder / "item_ids.json").write_text(json.dumps(emb.item_ids))


@pytest.fixture
def runs(tmp_path, tiny_dataset, tiny_split, tiny_chat_tokenizer, tiny_llama):
    """A pipeline-shaped run (<run>/train/model with the item head, <run>/embeddings) and a copy without a head."""
    model = tmp_path / "run" / "train" / "model"
    _head_run(model, tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    _set_head(model, 1.0)
    shutil.copytree(model, tmp_path / "no_head")
    _set_head(tmp_path / "no_head", None)
    rng = np.random.default_rng(5)
    ids = tiny_dataset.item_ids()
    _write_vectors(tmp_path / "run" / "embeddings", ItemEmbeddings(ids, rng.normal(size=(len(ids), 8))))
    tiny_split.save(tmp_path / "split")
    return {"model": model, "no_head": tmp_path / "no_head", "vectors": tmp_path / "run" / "embeddings",
            "split": tmp_path / "split"}


def test_weight_zero_reads_nothing_and_decodes_bit_identically(runs, tiny_split):
    from inference.trained_run import TrainedRun

    assert load_item_prior(runs["model"], 0.0, "/no/such/folder") == {}  # nothing is read at weight 0
    histories = tiny_split.serving_histories()
    users = sorted(histories)
    run = TrainedRun.load(runs["model"], device="cpu")
    plain = run.recommender(3, 8)(users, [histories[u] for u in users])
    vectors = load_item_prior(runs["model"], 1.0)["item_vectors"]
    zero = run.recommender(3, 8, item_vector_prior_weight=0.0, item_vectors=vectors)(users, [histories[u] for u in users])
    assert zero == plain  # ids and float scores, exactly
    some = ItemEmbeddings(["i7", "i8"], vectors.vectors[:2])  # vectors for two items only
    unvectored = [["i1", "i2"], ["i3", "i4", "i5"], ["i6"]]  # histories with no vectored item get no prior
    assert run.recommender(3, 8, item_vector_prior_weight=5.0, item_vectors=some)(users[:3], unvectored) == \
        run.recommender(3, 8)(users[:3], unvectored)


def test_a_large_weight_puts_the_item_closest_to_the_history_mean_first(runs, tiny_dataset):
    from inference.recommend_cli import RecommendArgs, recommend_for

    history = ["i1", "i2"]
    args = {"history": ",".join(history), "k": 6, "num_beams": 6, "device": "cpu"}
    before = [r["item_id"] for r in recommend_for(RecommendArgs(model_dir=str(runs["model"]), **args))["recommendations"]]
    planted = before[-1]  # the model's last choice among the non-history items
    ids = tiny_dataset.item_ids()
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(len(ids), 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[ids.index(planted)] = vectors[ids.index("i1")] + vectors[ids.index("i2")]  # the history's mean direction
    _write_vectors(runs["vectors"], ItemEmbeddings(ids, vectors))  # <run>/embeddings: found from model_dir
    got = recommend_for(RecommendArgs(model_dir=str(runs["model"]), item_vector_prior_weight=200.0, **args))
    assert got["recommendations"][0]["item_id"] == planted != before[0]


def test_evaluate_and_cache_refuse_the_prior_without_an_item_head_in_one_line(runs, tmp_path, capsys):
    from alignrec.cli import main

    base = ["evaluate", "--split_dir", str(runs["split"]), "--device", "cpu"]
    for model, extra, message in [
        (runs["no_head"], ["--item_vectors", str(runs["vectors"])], "trained without an item head"),
        (runs["model"], ["--item_head_decode_weight", "0"], "decodes with weight 0"),
        (runs["no_head"].parent / "elsewhere", [], "pass --item_vectors DIR"),
    ]:
        if not model.exists():
            shutil.copytree(runs["model"], model)  # a run outside the pipeline layout: no embeddings beside it
        out = tmp_path / "eval"
        rc = main([*base, "--model_dir", str(model), "--out_dir", str(out), "--item_vector_prior_weight", "1", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0] and not out.exists(), err
    rc = main(["cache", "build", "--model_dir", str(runs["no_head"]), "--split_dir", str(runs["split"]), "--out_dir",
               str(tmp_path / "c"), "--k", "3", "--item_vector_prior_weight", "1", "--item_vectors",
               str(runs["vectors"]), "--device", "cpu"])
    assert rc == 2 and "trained without an item head" in capsys.readouterr().err
    from inference.cli import EvaluateConfig

    with pytest.raises(ValueError, match="item_vector_prior_weight must be >= 0"):
        EvaluateConfig(model_dir="m", split_dir="s", out_dir="o", item_vector_prior_weight=-1.0)
    assert resolve_item_vectors_dir(runs["model"], None) == runs["vectors"].resolve()


def test_cache_build_serves_the_prior_and_it_is_another_cache(runs, tmp_path, tiny_split):
    from inference.cache import iter_cache, read_manifest
    from inference.cache.model_recommender import ModelRecommenderFactory, model_identity
    from inference.item_prior import item_vectors_fingerprint
    from inference.trained_run import TrainedRun

    _cli(["cache", "build", "--model_dir", str(runs["model"]), "--split_dir", str(runs["split"]), "--out_dir",
          str(tmp_path / "c"), "--k", "3", "--num_beams", "8", "--device", "cpu", "--item_vector_prior_weight", "2.5"])
    tag = f"#item_vector_prior_weight=2.5@{item_vectors_fingerprint(runs['vectors'])}"
    assert read_manifest(tmp_path / "c")["model"].endswith(tag)
    histories = tiny_split.serving_histories()
    users = sorted(histories)
    want = TrainedRun.load(runs["model"], device="cpu").recommender(
        3, 8, **load_item_prior(runs["model"], 2.5))(users, [histories[u] for u in users])
    got = {u: recs for u, _, recs in iter_cache(tmp_path / "c")}
    for u, w in zip(users, want, strict=True):
        assert [i for i, _ in got[u]] == [i for i, _ in w]
    factory = ModelRecommenderFactory(str(runs["model"]), 3, 8, 8, device="cpu", item_vector_prior_weight=2.5)
    assert pickle.loads(pickle.dumps(factory))()(users, [histories[u] for u in users]) == want  # a Ray actor's fn
    assert model_identity(runs["model"]) == model_identity(runs["model"], 0.0, None, 0.0, None)  # 0: the old tag
