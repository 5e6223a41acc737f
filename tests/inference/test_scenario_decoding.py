"""Scenario-restricted constrained beam search: only the scenario's items, equal to brute force restricted to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.beam_search import constrained_beam_search, sequence_log_probs
from inference.recommender import left_pad, llm_recommender, recommend, tokenize_prompts
from inference.trie import ItemTrie
from tests.inference.test_beam_search import _assert_same_ranking


@pytest.fixture
def prompts() -> list[str]:
    return ["Recommend the next item for this user.", "The user bought gloves, glasses and a scale", "Toy Story"]


def _setup(coded, prompts):
    model, hf_tok, item_tok = coded
    token_ids = item_tok.item_token_ids(hf_tok)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, prompts))
    return model, ItemTrie(token_ids, item_tok.item_ids), torch.from_numpy(token_ids), input_ids, mask


SCEN_A = [0, 2, 3, 7, 11]  # item indices of a scenario (14 items in the catalogue)
SCEN_B = [1, 4, 5, 6, 8, 9, 10, 12, 13]


def test_restricted_rows_equal_brute_force_restricted_to_the_scenario(coded, prompts):
    model, trie, token_ids, input_ids, mask = _setup(coded, prompts)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)  # [batch, items]
    top_b = int(torch.tensor(SCEN_B)[brute[2, SCEN_B].argmax()])
    exclude = [[], [], [top_b]]  # row 2: scenario B without its brute-force best item
    allowed = [SCEN_A, None, SCEN_B]
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items, exclude=exclude,
                                  allowed=allowed)
    for row, allow in enumerate(allowed):
        items, scores = out.items[row], out.scores[row]
        alive = items >= 0
        keep = set(range(trie.num_items) if allow is None else allow) - set(exclude[row])
        assert set(items[alive].tolist()) == keep  # exactly the scenario's items (minus exclusions), once each
        ref = brute[row].clone()
        ref[[i for i in range(trie.num_items) if i not in keep]] = float("-inf")
        _assert_same_ranking(items[alive], scores[alive], ref)
        assert bool(torch.isinf(scores[~alive]).all())


def test_narrow_restricted_beams_stay_in_the_scenario(coded, prompts):
    model, trie, token_ids, input_ids, mask = _setup(coded, prompts)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=3, allowed=[SCEN_B] * 3)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)
    assert set(out.items.flatten().tolist()) <= set(SCEN_B)
    assert bool((out.items >= 0).all())  # 9 items in B: 3 beams always fill
    for row in range(3):
        assert torch.allclose(brute[row, out.items[row]], out.scores[row], atol=1e-4)


def test_allowed_nodes_match_a_brute_force_walk():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]])
    trie = ItemTrie(codes)
    restricted, keys = trie.allowed_nodes([[0, 1, 4], None, [2, 3]], exclude=[[1], [], [2, 3]])
    assert restricted.tolist() == [True, False, True]
    # row 0 keeps items 0 and 4: depth-1 nodes of first tokens 0 and 2; row 2 keeps nothing
    first_nodes = {int(k) for k in keys[1]}
    n1 = trie.num_nodes[1]
    assert first_nodes == {0 * n1 + int(trie.item_nodes[1][0]), 0 * n1 + int(trie.item_nodes[1][4])}
    assert {int(k) for k in keys[2]} == {int(trie.item_nodes[2][0]), int(trie.item_nodes[2][4])}
    with pytest.raises(ValueError, match="out of range"):
        trie.allowed_nodes([[9]])


def test_recommend_and_llm_recommender_serve_one_scenario(coded, prompts):
    model, hf_tok, item_tok = coded
    ids = item_tok.item_ids
    scen = {"a": [ids[i] for i in SCEN_A], "b": [ids[i] for i in SCEN_B]}
    out = recommend(model, hf_tok, item_tok, prompts, k=4, num_beams=6, allowed=[scen["a"], None, scen["b"]])
    assert {i for i, _ in out[0]} <= set(scen["a"]) and len(out[0]) == 4
    assert {i for i, _ in out[2]} <= set(scen["b"])
    fn = llm_recommender(model, hf_tok, item_tok, k=3, num_beams=5, exclude_history=True, scenario_items=scen,
                         prompt_fn=lambda h, it, ht: "history " + " ".join(h))
    recs = fn(["u1", "u2"], [[scen["a"][0]], [scen["b"][0]]], scenarios=["a", "b"])
    assert {i for i, _ in recs[0]} <= set(scen["a"]) - {scen["a"][0]}
    assert {i for i, _ in recs[1]} <= set(scen["b"]) - {scen["b"][0]}
    with pytest.raises(ValueError, match="scenarios must name one of"):
        fn(["u1"], [[ids[0]]], scenarios=["zzz"])


def test_scenario_prompt_names_target_and_tags_history(tiny_hf_tokenizer):
    from sft_tasks import seqrec_scenario_prompt
    from tokenization import ItemTokenizer

    tok = ItemTokenizer.from_codes(["i1", "i2"], np.array([[0, 1], [1, 0]]), [2, 2])
    prompt = seqrec_scenario_prompt(["i1", "i2"], ["food", "kitchen"], "kitchen", tok, tiny_hf_tokenizer)
    assert "<a_0><b_1> (food), <a_1><b_0> (kitchen)" in prompt
    assert "Predict the next item in kitchen." in prompt
    with pytest.raises(ValueError, match="2 history items but 1 scenario labels"):
        seqrec_scenario_prompt(["i1", "i2"], ["food"], "kitchen", tok, tiny_hf_tokenizer)
