"""Issue 34: the CSR beam search equals the padded one it replaced (items exactly, scores to 1e-5) on tries of
very different shapes, and its per-step memory is the live beams' real children (checked by shapes). Decode steps
run the base decoder alone (gathered head rows, a tiled normaliser) and equal the model's-logits path; the pieces
(edge logits, streaming item head, one-sort top-k, contenders) equal simple references. The tiled normaliser is
``sampled_softmax.linear_logsumexp``, checked in ``tests/recommenders/test_sampled_softmax.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import inference.beam_scoring as beam_scoring
import inference.beam_search as beam_search
from alignrec.recommenders.sampled_softmax import linear_logsumexp
from inference.beam_scoring import (
    contenders,
    edge_logits,
    row_logsumexp,
    segmented_topk,
)
from inference.beam_search import constrained_beam_search
from inference.item_head_scores import ItemHeadScores, item_head_bias
from inference.recommender import left_pad, tokenize_prompts
from inference.trie import ItemTrie
from tests.inference.conftest import PROMPTS, random_codes, tiny_decoder, tiny_peft_llama
from tests.inference.reference_beam_search import padded_beam_search, reference_item_head_bias

UNEQUAL = [30, 1, 2, 1]  # level-1 cluster sizes of the item-id-level trie: one huge cluster, three tiny


def _shape(name: str) -> tuple[np.ndarray, list[int]]:
    """(codes [N, L], codebook sizes) of one trie shape."""
    if name == "grid":  # 14 of the 27 cells of a 3 x 3 x 3 grid
        return random_codes(14, [3, 3, 3]), [3, 3, 3]
    if name == "unequal_id_level":  # a cluster then the item's own token (the shipped layout), clusters 30/1/2/1
        n = sum(UNEQUAL)
        return np.stack([np.repeat(np.arange(len(UNEQUAL)), UNEQUAL), np.arange(n)], 1), [len(UNEQUAL), n]
    if name == "unequal_deep":  # prefix (0,) holds 24 leaves over 4 x 6, (1,) one leaf, (2,) two
        rows = [(0, a, b) for a in range(4) for b in range(6)] + [(1, 0, 0), (2, 0, 0), (2, 0, 1)]
        return np.array(rows), [3, 4, 6]
    if name == "deep_id_level":  # two RQ levels then the item's own token: the item head over a 3-level trie
        n = 21
        prefix = np.stack([np.arange(n) % 3, (np.arange(n) * 7 // 3) % 4], 1)
        return np.concatenate([prefix, np.arange(n)[:, None]], 1), [3, 4, n]
    assert name == "singletons"  # every cluster holds one item: a width-1 id step
    return np.stack([np.arange(6), np.arange(6)], 1), [6, 6]


def _setup(name: str, architecture: str = "llama"):
    from tests.conftest import build_tiny_hf_tokenizer, build_tiny_llama
    from tokenization import ItemTokenizer

    codes, sizes = _shape(name)
    hf_tok = build_tiny_hf_tokenizer()
    item_tok = ItemTokenizer.from_codes([f"item{i}" for i in range(len(codes))], codes, sizes)
    item_tok.add_to_tokenizer(hf_tok)
    model = tiny_decoder(architecture, len(hf_tok), build_tiny_llama(len(hf_tok)))
    with torch.no_grad():  # sharper than a random init: rankings have clear gaps, beams really prune
        model.lm_head.weight.mul_(8.0)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, PROMPTS))
    return model.eval(), ItemTrie(item_tok.item_token_ids(hf_tok), item_tok.item_ids), input_ids, mask


def _options(trie: ItemTrie) -> dict[str, dict]:
    n = trie.num_items
    weights = np.arange(1, n + 1, dtype=np.float64) ** 2
    out = {
        "plain": {},
        "exclude": {"exclude": [[0, 1, 2], [], list(range(0, n, 2))]},
        "allowed": {"allowed": [None, list(range(n // 2)), [n - 1]], "exclude": [[], [0], []]},
        "popularity": {"node_bias": trie.popularity_bias(weights, 0.7)},
    }
    if trie.unique_last_tokens:
        out["item_head"] = {"item_head_weight": 0.6, "exclude": [[0], [], [1, 2]]}
    return out


SHAPES = [("grid", "llama"), ("unequal_id_level", "llama"), ("unequal_id_level", "phi"), ("unequal_deep", "gpt2"),
          ("singletons", "llama"), ("deep_id_level", "phi")]


@pytest.mark.parametrize(("name", "architecture"), SHAPES)
def test_csr_search_equals_the_padded_search_it_replaced(name, architecture):
    model, trie, input_ids, mask = _setup(name, architecture)
    for option, kwargs in _options(trie).items():
        for beams in (1, 4, 9, trie.num_items + 2):  # +2: more beams than items, dead beams padded
            new = constrained_beam_search(model, input_ids, mask, trie, num_beams=beams, **kwargs)
            old = padded_beam_search(model, input_ids, mask, trie, num_beams=beams, **kwargs)
            assert new.items.tolist() == old.items.tolist(), (option, beams)
            assert torch.allclose(new.scores, old.scores, atol=1e-5, rtol=0), (option, beams)
            assert bool((new.items >= 0).eq(torch.isfinite(new.scores)).all())


def test_step_memory_is_the_live_beams_children_not_the_widest_cluster(monkeypatch):
    model, trie, input_ids, mask = _setup("unequal_id_level")
    assert trie.max_children == [len(UNEQUAL), max(UNEQUAL)]
    edges: list[tuple[int, int, int]] = []  # (depth, states, edges)
    csr = ItemTrie.children_csr

    def spy(self, depth, nodes):
        out = csr(self, depth, nodes)
        edges.append((depth, nodes.numel(), out[0].numel()))
        return out

    def padded(*_a, **_k):
        raise AssertionError("the beam search must not pad children to the largest cluster")

    monkeypatch.setattr(ItemTrie, "children_csr", spy)
    monkeypatch.setattr(ItemTrie, "children", padded)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=4)
    batch = len(PROMPTS)
    # depth 0: one root per row, 4 clusters each; depth 1: the 4 beams are the 4 clusters, 30 + 1 + 2 + 1 edges
    assert edges == [(0, batch, batch * len(UNEQUAL)), (1, batch * 4, batch * sum(UNEQUAL))]
    assert batch * sum(UNEQUAL) < batch * 4 * max(UNEQUAL)  # what padding to the largest cluster held
    assert out.items.shape == (batch, 4) and bool((out.items >= 0).all())


def test_children_csr_is_exact_and_skips_negative_nodes():
    t = ItemTrie(np.array([[5, 1, 7], [5, 2, 7], [6, 1, 7], [5, 1, 8]]))  # depth-1 nodes: (5) -> 2 kids, (6) -> 1
    owner, child, tokens = t.children_csr(1, torch.tensor([1, -1, 0, 0]))
    assert owner.tolist() == [0, 2, 2, 3, 3]
    assert child.tolist() == [2, 0, 1, 0, 1]
    assert tokens.tolist() == [1, 1, 2, 1, 2]
    empty = t.children_csr(0, torch.tensor([-1, -1]))
    assert [e.numel() for e in empty] == [0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_logsumexp_is_log_softmax_normaliser_in_bounded_chunks(dtype, monkeypatch):
    logits = (torch.randn(37, 1000, generator=torch.Generator().manual_seed(0)) * 5).to(dtype)
    reference = logits.float() - torch.log_softmax(logits.float(), dim=-1)  # [rows, vocab], every column equal
    chunks: list[tuple[int, ...]] = []
    full = torch.logsumexp
    monkeypatch.setattr(torch, "logsumexp", lambda x, dim: chunks.append(tuple(x.shape)) or full(x, dim=dim))
    norm = row_logsumexp(logits, max_elements=3000)
    assert norm.dtype == torch.float32
    assert torch.allclose(norm, reference[:, 0], atol=1e-5, rtol=0)
    assert chunks == [(3, 1000)] * 12 + [(1, 1000)]  # 3000 elements per chunk, never [37, 1000] in float32
    chunks.clear()
    row_logsumexp(logits, max_elements=10)  # a budget under one row: one row at a time
    assert chunks == [(1, 1000)] * 37


def test_segmented_topk_matches_a_per_segment_sort():
    gen = torch.Generator().manual_seed(1)
    sizes = [0, 7, 1, 30, 12, 0]
    segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    values = torch.randn(int(segment.numel()), generator=gen)
    values[3] = float("-inf")
    pos, found = segmented_topk(values, segment, len(sizes), 5)
    assert pos.shape == found.shape == (len(sizes), 5)
    start = 0
    for s, size in enumerate(sizes):
        ref = values[start:start + size].sort(descending=True, stable=True)
        assert found[s].tolist() == [i < size for i in range(5)]
        assert (pos[s][found[s]] - start).tolist() == ref.indices[:5].tolist()
        start += size
    ties = segmented_topk(torch.tensor([1.0, 2.0, 2.0, 1.0, 3.0]), torch.tensor([0, 0, 0, 1, 1]), 2, 2)
    assert ties[0].tolist() == [[1, 2], [4, 3]]  # equal values keep their input order


class _Spy:
    """Records each model forward's logits shape, each decoder forward's [rows, positions], the normalisers run."""

    def __init__(self, monkeypatch, model):
        self.logits: list[tuple[int, ...]] = []
        self.states: list[tuple[int, ...]] = []
        self.tiled = 0
        forward, tiled = model.forward, beam_search.linear_logsumexp
        decoder = beam_scoring.base_decoder(model)
        decoder_forward = decoder.forward

        def spy_forward(*args, **kwargs):
            out = forward(*args, **kwargs)
            self.logits.append(tuple(out.logits.shape))
            return out

        def spy_decoder(*args, **kwargs):
            out = decoder_forward(*args, **kwargs)
            self.states.append(tuple(out.last_hidden_state.shape[:2]))
            return out

        def spy_tiled(*args, **kwargs):
            self.tiled += 1
            return tiled(*args, **kwargs)

        monkeypatch.setattr(model, "forward", spy_forward)
        monkeypatch.setattr(decoder, "forward", spy_decoder)
        monkeypatch.setattr(beam_search, "linear_logsumexp", spy_tiled)


@pytest.mark.parametrize(("name", "architecture"), SHAPES)
def test_decode_steps_score_from_hidden_states_exactly_as_from_the_models_logits(name, architecture, monkeypatch):
    model, trie, input_ids, mask = _setup(name, architecture)
    batch, vocab = input_ids.shape[0], model.config.vocab_size
    guard = (min(batch, beam_scoring.GUARD_ROWS), min(input_ids.shape[1], beam_scoring.GUARD_POSITIONS))
    for option, kwargs in _options(trie).items():
        for beams in (1, 4, trie.num_items + 2):
            with monkeypatch.context() as m:
                spy = _Spy(m, model)
                new = constrained_beam_search(model, input_ids, mask, trie, num_beams=beams, **kwargs)
            # prefill: one row of logits per prompt, guard: one per checked prompt; decode steps: the decoder alone
            assert spy.logits == [(batch, 1, vocab), (guard[0], 1, vocab)]
            assert spy.states == [tuple(input_ids.shape), guard, guard] + [(batch * beams, 1)] * (trie.code_len - 1)
            assert spy.tiled == trie.code_len - 1
            with monkeypatch.context() as m:
                m.setattr(beam_search, "linear_output_head", lambda _model: None)  # the model's logits throughout
                spy = _Spy(m, model)
                full = constrained_beam_search(model, input_ids, mask, trie, num_beams=beams, **kwargs)
            assert spy.tiled == 0 and all(shape[1] == 1 for shape in spy.logits)
            assert new.items.tolist() == full.items.tolist(), (option, beams)
            assert torch.allclose(new.scores, full.scores, atol=1e-5, rtol=0), (option, beams)


class _DoubledStates(torch.nn.Module):
    """A decoder whose last hidden states are doubled: the model's logits stay right, these states no longer give them."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.last_hidden_state = out.last_hidden_state * 2.0
        return out


@pytest.mark.parametrize("break_head", ["states", "no_decoder", "bad_decoder", "logit_transform"])
def test_a_head_that_does_not_give_the_logits_decodes_from_them_with_a_warning(break_head, monkeypatch, caplog):
    model, trie, input_ids, mask = _setup("unequal_id_level", "phi")
    kwargs = {"exclude": [[0], [], [1, 2]], "item_head_weight": 0.6}
    reference = padded_beam_search(model, input_ids, mask, trie, num_beams=5, **kwargs)
    monkeypatch.setattr(beam_scoring, "_WARNED", set())
    spy = _Spy(monkeypatch, model)
    broken = {"states": lambda: _DoubledStates(model.model), "no_decoder": lambda: model, "bad_decoder": torch.nn.Identity}
    if break_head in broken:  # the guard catches wrong states or a failing decoder; the model itself is no decoder
        monkeypatch.setattr(model, "get_decoder", broken[break_head])
    else:  # trainer.lm_loss.output_head refuses a model whose forward transforms its logits
        monkeypatch.setattr(model.config, "logit_scale", 2.0, raising=False)
    with caplog.at_level("WARNING", logger="inference.beam_scoring"):
        out = constrained_beam_search(model, input_ids, mask, trie, num_beams=5, **kwargs)
    assert "decoding from the model's full logits" in caplog.text
    assert spy.tiled == 0
    assert out.items.tolist() == reference.items.tolist()
    assert torch.allclose(out.scores, reference.scores, atol=1e-5, rtol=0)


def test_the_normaliser_and_edge_logits_round_like_a_bfloat16_head():
    """Decoding's normaliser is ``linear_logsumexp`` with tiles in the model's dtype (its exactness is checked in
    ``tests/recommenders/test_sampled_softmax.py``): here, called as the search calls it, on a bfloat16 head."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 32, generator=gen).bfloat16()
    head = torch.nn.Linear(32, 500).bfloat16()
    logits = head(hidden)  # [9, 500] bfloat16: what the model's head returns
    with torch.inference_mode():
        norm = linear_logsumexp(hidden, head.weight, bias=head.bias, tile_dtype=hidden.dtype, max_elements=1000)
    assert norm.dtype == torch.float32
    assert torch.allclose(norm, torch.logsumexp(logits.float(), dim=-1), atol=1e-2, rtol=0)
    owner, tokens = torch.tensor([0, 0, 3, 8, 8]), torch.tensor([0, 499, 7, 250, 3])
    got = edge_logits(hidden, head.weight, head.bias, owner, tokens)
    assert got.dtype == torch.float32
    assert torch.allclose(got, logits[owner, tokens].float(), atol=2e-2, rtol=0)  # one bfloat16 rounding at most


@pytest.mark.parametrize("bias", [True, False])
def test_edge_logits_are_the_heads_logits_at_the_edges(bias, monkeypatch):
    gen = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(11, 24, generator=gen), torch.randn(3000, 24, generator=gen)
    b = torch.randn(3000, generator=gen) if bias else None
    owner = torch.sort(torch.randint(0, 11, (9000,), generator=gen)).values
    tokens = torch.randint(0, 3000, (9000,), generator=gen)
    monkeypatch.setattr(beam_scoring, "EDGE_BLOCK", 1000)  # several blocks, the last one short
    expected = torch.nn.functional.linear(hidden, weight, b)[owner, tokens]
    assert torch.allclose(edge_logits(hidden, weight, b, owner, tokens), expected, atol=1e-5, rtol=0)
    assert edge_logits(hidden, weight, b, owner[:0], tokens[:0]).shape == (0,)


def _id_level_trie(prefixes: np.ndarray, id_tokens: np.ndarray) -> ItemTrie:
    return ItemTrie(np.concatenate([prefixes, id_tokens[:, None]], 1))


@pytest.mark.parametrize("layout", ["contiguous", "permuted", "gaps", "deep"])
def test_item_head_scores_equal_the_dense_reference(layout, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    rng = np.random.default_rng(3)
    n = 200
    prefixes = rng.integers(0, 7, size=(n, 1)) + 1000
    ids = np.arange(n) + 2000  # item i's own token: one contiguous block, item order (the tokenizer's layout)
    if layout == "permuted":
        ids = rng.permutation(ids)
    elif layout == "gaps":  # not one block: the head gathers its columns
        ids = np.sort(rng.choice(np.arange(2000, 2600), size=n, replace=False))
    elif layout == "deep":
        prefixes = np.concatenate([prefixes, rng.integers(0, 3, size=(n, 1)) + 1100], 1)
    trie = _id_level_trie(prefixes, ids)
    logits = torch.randn(5, 2700, generator=gen) * 4
    monkeypatch.setattr(ItemHeadScores, "COLUMN_BLOCK", 64)  # several column blocks, the last one short
    got = item_head_bias(trie, logits, 0.7)
    expected = reference_item_head_bias(trie, logits, 0.7)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-5, rtol=0)


def test_item_head_scores_stay_exact_for_a_subtree_far_below_the_best_item():
    """One cluster's items sit 300 nats under the row's best: a single shift underflows there, so the row is redone
    with a per-parent shift (finite, exact scores, as the dense reference gives)."""
    trie = _id_level_trie(np.repeat([[0], [1], [2]], 4, axis=0) + 50, np.arange(12) + 100)
    logits = torch.randn(3, 112, generator=torch.Generator().manual_seed(4))
    logits[1, 108:112] -= 300.0  # row 1: cluster 2's items
    got = item_head_bias(trie, logits, 1.0)
    expected = reference_item_head_bias(trie, logits, 1.0)
    for g, e in zip(got, expected, strict=True):
        assert bool(torch.isfinite(g).all())
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-6)
    assert got[0][1, 2] < -290  # the far cluster's head score, finite


def _stable_topk_per_segment(values: torch.Tensor, segment: torch.Tensor, num_segments: int, k: int):
    rows = []
    for s in range(num_segments):
        idx = (segment == s).nonzero().flatten()
        order = torch.sort(values[idx], descending=True, stable=True).indices[:k]
        rows.append(idx[order].tolist())
    return rows


def test_segmented_topk_equals_a_stable_sort_with_ties_infinities_and_signed_zeros():
    gen = torch.Generator().manual_seed(5)
    segment = torch.randint(0, 9, (400,), generator=gen)  # unsorted segments, one likely empty slot at 9 - 1
    values = torch.randint(-4, 4, (400,), generator=gen).float() / 2  # heavy ties
    values[::17] = float("-inf")
    values[::23] = -0.0
    values[5::23] = 0.0
    pos, found = segmented_topk(values, segment, 10, 6)
    expected = _stable_topk_per_segment(values, segment, 10, 6)
    for s in range(10):
        assert pos[s][found[s]].tolist() == expected[s]
        assert int(found[s].sum()) == min(6, int((segment == s).sum()))


@pytest.mark.parametrize("states", [2, 5, 8])
def test_contenders_keep_every_edge_the_top_k_can_pick(states):
    gen = torch.Generator().manual_seed(6)
    batch, k = 4, 5
    counts = torch.randint(0, 12, (batch * states,), generator=gen)  # some beams without children
    owner = torch.repeat_interleave(torch.arange(batch * states), counts)
    row = owner // states
    values = torch.randint(-6, 0, (owner.numel(),), generator=gen).float()  # ties at the bar
    values[::11] = float("-inf")
    sub = contenders(values, owner, row, batch, states, k)
    full = segmented_topk(values, row, batch, k)
    if states < k:
        assert sub is None
        return
    assert sub.numel() < values.numel()  # something was pruned
    pick, found = segmented_topk(values[sub], row[sub], batch, k)
    assert sub[pick][found].tolist() == full[0][full[1]].tolist()
    assert found.tolist() == full[1].tolist()


@pytest.mark.parametrize(("tied", "rows"), [(True, "trainable_tokens"), (False, "trainable_tokens"),
                                            (False, "modules_to_save")])
def test_peft_decoders_decode_from_hidden_states_exactly(tied, rows, monkeypatch):
    """A LoRA run's head is read through peft (trained code-token rows, modules_to_save copies), as training reads it."""
    from tests.conftest import build_tiny_hf_tokenizer
    from tokenization import ItemTokenizer

    codes, sizes = _shape("unequal_id_level")
    hf_tok = build_tiny_hf_tokenizer()
    base_vocab = len(hf_tok)
    item_tok = ItemTokenizer.from_codes([f"item{i}" for i in range(len(codes))], codes, sizes)
    item_tok.add_to_tokenizer(hf_tok)
    model = tiny_peft_llama(len(hf_tok), base_vocab, tied, rows)
    trie = ItemTrie(item_tok.item_token_ids(hf_tok), item_tok.item_ids)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, PROMPTS))
    kwargs = {"exclude": [[0], [], [1, 2]], "item_head_weight": 0.6}
    spy = _Spy(monkeypatch, model)
    new = constrained_beam_search(model, input_ids, mask, trie, num_beams=6, **kwargs)
    assert spy.tiled == 1 and spy.states[-1] == (len(PROMPTS) * 6, 1)  # the id step ran on the decoder's states
    reference = padded_beam_search(model, input_ids, mask, trie, num_beams=6, **kwargs)
    assert new.items.tolist() == reference.items.tolist()
    assert torch.allclose(new.scores, reference.scores, atol=1e-5, rtol=0)
