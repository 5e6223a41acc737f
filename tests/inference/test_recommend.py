"""recommend(): item ids with true log-probs, exclusion by item id, argument checks, llm_recommender."""

from __future__ import annotations

import pytest
import torch

from inference.beam_search import sequence_log_probs
from inference.recommender import left_pad, llm_recommender, recommend, tokenize_prompts


def _brute(coded, prompts):
    model, hf_tok, item_tok = coded
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, prompts))
    return sequence_log_probs(model, input_ids, mask, torch.from_numpy(item_tok.item_token_ids(hf_tok)))


def test_recommend_returns_top_k_item_ids_in_input_order(coded, prompts):
    model, hf_tok, item_tok = coded
    n = len(item_tok.item_ids)
    # batch_size 2 with length-sorted batching: results must still come back in input order
    recs = recommend(model, hf_tok, item_tok, prompts, k=5, num_beams=n, batch_size=2)
    brute = _brute(coded, prompts)
    for row, rec in enumerate(recs):
        assert len(rec) == 5 and len({item for item, _ in rec}) == 5
        expected = brute[row].topk(5)
        assert [s for _, s in rec] == pytest.approx(expected.values.tolist(), abs=1e-4)
        for item, score in rec:
            assert score == pytest.approx(brute[row, item_tok.item_ids.index(item)].item(), abs=1e-4)


def test_recommend_excludes_history_items(coded, prompts):
    model, hf_tok, item_tok = coded
    plain = recommend(model, hf_tok, item_tok, prompts, k=3, num_beams=14)
    history = [[item for item, _ in rec[:2]] + ["not-in-catalogue"] for rec in plain]
    recs = recommend(model, hf_tok, item_tok, prompts, k=3, num_beams=14, exclude=history)
    for rec, before, hist in zip(recs, plain, history, strict=True):
        assert not {item for item, _ in rec} & set(hist)
        assert rec[0][0] == before[2][0]  # exhaustive beams: the best remaining item moves up
        assert rec[0][1] == pytest.approx(before[2][1], abs=1e-4)


def test_recommend_never_pads_with_invalid_items(coded):
    model, hf_tok, item_tok = coded
    everything_but_two = [item_tok.item_ids[2:]]
    recs = recommend(model, hf_tok, item_tok, ["Toy Story"], k=5, num_beams=5, exclude=everything_but_two)
    assert sorted(item for item, _ in recs[0]) == sorted(item_tok.item_ids[:2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0, "num_beams": 4}, "k must be >= 1"),
        ({"k": 5, "num_beams": 4}, "num_beams \\(4\\) must be >= k \\(5\\)"),
        ({"k": 2, "num_beams": 4, "batch_size": 0}, "batch_size"),
        ({"k": 2, "num_beams": 4, "exclude": [[]]}, "exclude has 1 entries for 3 prompts"),
    ],
)
def test_recommend_bad_arguments(coded, prompts, kwargs, match):
    model, hf_tok, item_tok = coded
    with pytest.raises(ValueError, match=match):
        recommend(model, hf_tok, item_tok, prompts, **kwargs)


def test_llm_recommender_builds_prompts_and_excludes_history(coded):
    model, hf_tok, item_tok = coded
    seen = []

    def prompt_fn(history, item_tokenizer, hf_tokenizer):
        seen.append(list(history))
        return "Recommend: " + "".join(item_tokenizer.item_to_string(i) for i in history)

    fn = llm_recommender(model, hf_tok, item_tok, k=4, num_beams=8, exclude_history=True, prompt_fn=prompt_fn)
    histories = [["item0", "item1"], ["item5"]]
    recs = fn(["u1", "u2"], histories)
    assert seen == histories
    assert [len(r) for r in recs] == [4, 4]
    for rec, hist in zip(recs, histories, strict=True):
        assert not {item for item, _ in rec} & set(hist)
    direct = recommend(model, hf_tok, item_tok, [prompt_fn(h, item_tok, hf_tok) for h in histories], 4, 8,
                       exclude=histories)
    assert [[i for i, _ in r] for r in recs] == [[i for i, _ in r] for r in direct]


def test_popularity_penalty_reranks_every_item_by_log_prob_minus_scaled_log_count(coded):
    model, hf_tok, item_tok = coded
    items = list(item_tok.item_ids)
    counts = {item: 50 * (i % 3) for i, item in enumerate(items)}  # a third of the catalogue never bought
    history = [items[0]]
    plain = llm_recommender(model, hf_tok, item_tok, k=len(items) - 1, num_beams=len(items), exclude_history=True)
    penalised = llm_recommender(model, hf_tok, item_tok, k=len(items) - 1, num_beams=len(items), exclude_history=True,
                                popularity_penalty=1.0, item_counts=counts)
    base = dict(plain(["u"], [history])[0])
    adjusted = penalised(["u"], [history])[0]
    total = sum(counts[i] + 1 for i in items)
    for item, score in adjusted:  # every score is log p - log((count + 1) / total), best first
        assert score == pytest.approx(base[item] - float(torch.log(torch.tensor((counts[item] + 1) / total))), abs=1e-4)
    assert [s for _, s in adjusted] == sorted((s for _, s in adjusted), reverse=True)
    with pytest.raises(ValueError, match="item_counts"):
        llm_recommender(model, hf_tok, item_tok, k=2, num_beams=4, popularity_penalty=0.5)


def test_public_api_resolves_and_recommend_stays_a_function():
    import importlib

    import inference
    import inference.recommender  # noqa: F401  (the submodule must not shadow the exported function)

    assert callable(inference.recommend) and inference.recommend.__name__ == "recommend"
    for name in inference.__all__:  # each exported function / class is the one its defining module holds
        value = getattr(inference, name)
        if getattr(value, "__module__", None) and getattr(value, "__name__", None) == name:
            assert getattr(importlib.import_module(value.__module__), name) is value


def test_item_rows_are_built_once_per_catalogue_not_per_batch(coded, prompts, monkeypatch):
    """Issue 34: the id -> row map is O(catalogue); a cache build calls ``recommend`` per chunk of users."""
    import inference.recommender as recommender
    from tokenization import ItemTokenizer

    model, hf_tok, item_tok = coded
    monkeypatch.setattr(recommender, "_ROWS_CACHE", {})
    first = recommend(model, hf_tok, item_tok, prompts, k=3, num_beams=6, exclude=[["item0"], [], ["item5"]])
    cached = recommender._ROWS_CACHE[item_tok.content_hash]
    assert recommend(model, hf_tok, item_tok, prompts, k=3, num_beams=6, exclude=[["item0"], [], ["item5"]]) == first
    assert recommender._ROWS_CACHE[item_tok.content_hash] is cached and len(recommender._ROWS_CACHE) == 1
    # another catalogue order (another content hash) gets its own map, so its rows are its own
    reordered = ItemTokenizer.from_codes(item_tok.item_ids[::-1], item_tok.codes[::-1], item_tok.codebook_sizes)
    again = recommend(model, hf_tok, reordered, prompts, k=3, num_beams=6, exclude=[["item0"], [], ["item5"]])
    assert len(recommender._ROWS_CACHE) == 2
    for a, b in zip(first, again, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)
