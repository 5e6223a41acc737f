"""Issue 34, ``decode_normaliser`` children: each step normalised over the trie children of the beam's node, the item
head at the leaf edge only. Exhaustive beams equal a brute-force reference built from teacher-forced full logits
(both the hidden-state path and the model's-logits path), exclusion never inflates the remaining items, no
full-vocabulary logits are computed after the once-per-model guard, ``auto`` resolves on the catalogue size, and the
key travels from evaluate / the cache / the recommender down to ``constrained_beam_search``."""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest
import torch

import inference.beam_scoring as beam_scoring
import inference.beam_search as beam_search
from alignrec.recommenders import sampled_softmax
from inference.beam_search import constrained_beam_search
from inference.decode_normaliser import describe_normaliser, resolve_normaliser
from inference.item_head_scores import head_columns
from inference.item_prior import ItemPriorRows
from tests.inference.test_beam_scale import SHAPES, _setup, _Spy

HEAD_WEIGHT = 0.6


def _item_tokens(trie) -> torch.Tensor:
    """``[N, L]`` each item's code tokens, read back from the trie."""
    return torch.stack([trie.child_tokens[d][trie.item_nodes[d + 1]] for d in range(trie.code_len)], 1)


@torch.inference_mode()
def children_reference(model, input_ids, mask, trie) -> tuple[torch.Tensor, torch.Tensor]:
    """``(path [batch, N], head [batch, N])`` float64 from one teacher-forced forward of every (prompt, item): the sum
    over the item's path of ``logit(token) - logsumexp(logits of that node's trie children)``, and the prefill's
    logit of the item's last (item-id) token."""
    batch, n, code_len = input_ids.shape[0], trie.num_items, trie.code_len
    codes = _item_tokens(trie)  # [N, L]
    ids = torch.cat([input_ids.repeat_interleave(n, 0), codes.repeat(batch, 1)], 1)
    full_mask = torch.cat([mask.repeat_interleave(n, 0), torch.ones(batch * n, code_len, dtype=mask.dtype)], 1)
    pos = (full_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=full_mask, position_ids=pos).logits.double()
    logits = logits[:, -code_len - 1:-1].view(batch, n, code_len, -1)  # [batch, N, L, vocab]: predicts token d
    path = torch.zeros(batch, n, dtype=torch.float64)
    for item in range(n):
        for d in range(code_len):
            parent = int(trie.item_nodes[d][item])
            children = trie.child_tokens[d][int(trie.offsets[d][parent]):int(trie.offsets[d][parent + 1])]
            z = logits[:, item, d]  # [batch, vocab]
            path[:, item] += z[:, codes[item, d]] - torch.logsumexp(z[:, children], dim=-1)
    head = logits[:, :, 0].gather(-1, codes[:, -1].expand(batch, n).unsqueeze(-1)).squeeze(-1)  # prefill row
    return path, head


def _random_prior(trie, batch: int, dim: int = 5) -> tuple[ItemPriorRows, torch.Tensor]:
    """A content prior (``ItemPriorRows``) and its dense bias ``[batch, N]`` in item order."""
    gen = torch.Generator().manual_seed(7)
    users, table = torch.randn(batch, dim, generator=gen), torch.randn(trie.num_items, dim, generator=gen)
    _, _, items = head_columns(trie)  # head column -> item
    column_of_item = torch.empty_like(items).scatter_(0, items, torch.arange(len(items)))
    return ItemPriorRows(users, table[items], column_of_item), (users @ table.T).double()


def _cases(trie, batch: int) -> dict[str, tuple[dict, str]]:
    """option -> (search kwargs, what the reference adds: '', 'bias', 'head', 'prior')."""
    n = trie.num_items
    weights = np.arange(1, n + 1, dtype=np.float64) ** 2
    out = {"plain": ({}, ""), "exclude": ({"exclude": [[0, 1, 2], [], list(range(0, n, 2))]}, ""),
           "allowed": ({"allowed": [None, list(range(n // 2)), [n - 1]], "exclude": [[], [0], []]}, ""),
           "popularity": ({"node_bias": trie.popularity_bias(weights, 0.7)}, "bias")}
    if trie.unique_last_tokens:
        out["item_head"] = ({"item_head_weight": HEAD_WEIGHT, "exclude": [[0], [], [1, 2]]}, "head")
        prior, _ = _random_prior(trie, batch)
        out["item_head_prior"] = ({"item_head_weight": HEAD_WEIGHT, "item_prior": prior}, "prior")
    return out


def _expected(trie, path, head, kwargs, extra) -> torch.Tensor:
    """``[batch, N]`` reference scores of ``kwargs``; -inf for items a row may not return."""
    want = path.clone()
    if extra == "bias":
        want += sum(kwargs["node_bias"][d][trie.item_nodes[d + 1]].double() for d in range(trie.code_len))
    if extra in ("head", "prior"):
        bias = _random_prior(trie, path.shape[0])[1] if extra == "prior" else 0.0
        want += HEAD_WEIGHT * (head + bias)
    for row, items in enumerate(kwargs.get("exclude") or []):
        want[row, list(items)] = float("-inf")
    for row, items in enumerate(kwargs.get("allowed") or []):
        if items is not None:
            banned = sorted(set(range(trie.num_items)) - set(items))
            want[row, banned] = float("-inf")
    return want


def _assert_exhaustive_beam_equals(out, want) -> None:
    for row in range(want.shape[0]):
        order = [i for i in torch.sort(want[row], descending=True, stable=True).indices.tolist()
                 if torch.isfinite(want[row, i])]
        got = [i for i in out.items[row].tolist() if i >= 0]
        assert got == order, row
        assert torch.allclose(out.scores[row, :len(got)].double(), want[row, got], atol=1e-5, rtol=0), row


@pytest.mark.parametrize("path_kind", ["hidden", "logits"])
@pytest.mark.parametrize(("name", "architecture"), SHAPES)
def test_children_scores_equal_the_brute_force_reference(name, architecture, path_kind, monkeypatch):
    model, trie, input_ids, mask = _setup(name, architecture)
    if path_kind == "logits":  # a head that is not a plain linear map: the model's logits, normalised the same way
        monkeypatch.setattr(beam_search, "linear_output_head", lambda _model: None)
    path, head = children_reference(model, input_ids, mask, trie)
    for option, (kwargs, extra) in _cases(trie, input_ids.shape[0]).items():
        out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items + 2,
                                      normaliser="children", **kwargs)
        try:
            _assert_exhaustive_beam_equals(out, _expected(trie, path, head, kwargs, extra))
        except AssertionError as err:
            raise AssertionError(f"{option}: {err}") from err


@pytest.mark.parametrize("masks", [{"exclude": [[3, 4, 5, 6], [0], list(range(0, 34, 3))]},
                                   {"allowed": [list(range(10)), None, [5, 30, 31]]}])
def test_exclusion_and_allowed_sets_do_not_inflate_the_remaining_items(masks):
    model, trie, input_ids, mask = _setup("unequal_id_level", "phi")
    beams = trie.num_items + 2
    full = constrained_beam_search(model, input_ids, mask, trie, beams, normaliser="children")
    masked = constrained_beam_search(model, input_ids, mask, trie, beams, normaliser="children", **masks)
    for row in range(input_ids.shape[0]):
        before = dict(zip(full.items[row].tolist(), full.scores[row].tolist(), strict=True))
        after = {i: s for i, s in zip(masked.items[row].tolist(), masked.scores[row].tolist(), strict=True) if i >= 0}
        allowed = (masks.get("allowed") or [None] * 3)[row]
        removed = set((masks.get("exclude") or [[]] * 3)[row]) | (set(before) - set(allowed) if allowed else set())
        assert set(after) == set(before) - removed - {-1}
        assert all(abs(after[i] - before[i]) <= 1e-5 for i in after)  # the siblings' scores did not move


def test_children_mode_reads_no_full_vocabulary_logits_after_the_guard(monkeypatch):
    model, trie, input_ids, mask = _setup("unequal_id_level", "phi")
    monkeypatch.setattr(beam_scoring, "_VERDICTS", weakref.WeakKeyDictionary())

    def refuse(*_a, **_k):
        raise AssertionError("children mode must not normalise over the vocabulary or stream over every item")

    for name in ("linear_logsumexp", "row_logsumexp", "ItemHeadScores"):
        monkeypatch.setattr(beam_search, name, refuse)
    spy = _Spy(monkeypatch, model)
    prior, _ = _random_prior(trie, input_ids.shape[0])
    kwargs = {"exclude": [[0], [], [1, 2]], "item_head_weight": HEAD_WEIGHT, "item_prior": prior,
              "normaliser": "children"}
    first = constrained_beam_search(model, input_ids, mask, trie, num_beams=5, **kwargs)
    guard = (min(input_ids.shape[0], beam_scoring.GUARD_ROWS), min(input_ids.shape[1], beam_scoring.GUARD_POSITIONS))
    assert spy.logits == [(guard[0], 1, model.config.vocab_size)]  # the guard's one row per checked prompt, once
    # the guard (the model's forward runs the decoder, then the decoder alone), the prefill, the id step
    assert spy.states == [guard, guard, tuple(input_ids.shape), (input_ids.shape[0] * 5, 1)]
    second = constrained_beam_search(model, input_ids, mask, trie, num_beams=5, **kwargs)
    assert len(spy.logits) == 1  # the verdict is remembered: no model forward at all in a second batch
    assert spy.states[4:] == [tuple(input_ids.shape), (input_ids.shape[0] * 5, 1)]
    assert first.items.tolist() == second.items.tolist() and torch.equal(first.scores, second.scores)


def test_a_model_failing_the_guard_is_remembered_and_decodes_from_its_logits(monkeypatch):
    model, trie, input_ids, mask = _setup("unequal_id_level", "phi")
    monkeypatch.setattr(beam_scoring, "_VERDICTS", weakref.WeakKeyDictionary())
    calls = []
    monkeypatch.setattr(beam_scoring, "head_reproduces", lambda *a: calls.append(1) or False)
    kwargs = {"normaliser": "children", "item_head_weight": HEAD_WEIGHT, "exclude": [[0], [], [1, 2]]}
    outs = [constrained_beam_search(model, input_ids, mask, trie, 6, **kwargs) for _ in range(2)]
    assert len(calls) == 1  # checked once per model, the failure remembered too
    monkeypatch.setattr(beam_search, "linear_output_head", lambda _model: None)  # the model's logits throughout
    reference = constrained_beam_search(model, input_ids, mask, trie, 6, **kwargs)
    for out in outs:
        assert out.items.tolist() == reference.items.tolist() and torch.equal(out.scores, reference.scores)


def test_auto_resolves_on_the_catalogue_size(monkeypatch):
    assert describe_normaliser("auto", 1_000_000) == "children (auto: 1,000,000 items >= 100,000)"
    assert describe_normaliser("auto", 99_999) == "vocabulary (auto: 99,999 items < 100,000)"
    assert describe_normaliser("children", 14) == "children (set)"
    assert resolve_normaliser("vocabulary", 10**7) == "vocabulary"
    with pytest.raises(ValueError, match="decode_normaliser must be one of"):
        resolve_normaliser("exact", 14)
    model, trie, input_ids, mask = _setup("unequal_id_level", "phi")
    kwargs = {"num_beams": 6, "item_head_weight": HEAD_WEIGHT}
    children = constrained_beam_search(model, input_ids, mask, trie, normaliser="children", **kwargs)
    vocabulary = constrained_beam_search(model, input_ids, mask, trie, normaliser="vocabulary", **kwargs)
    assert not torch.allclose(children.scores, vocabulary.scores)
    assert torch.equal(constrained_beam_search(model, input_ids, mask, trie, **kwargs).scores, vocabulary.scores)
    monkeypatch.setattr(sampled_softmax, "AUTO_SAMPLED_MIN_ITEMS", trie.num_items)
    assert torch.equal(constrained_beam_search(model, input_ids, mask, trie, **kwargs).scores, children.scores)
    monkeypatch.setattr(sampled_softmax, "AUTO_SAMPLED_MIN_ITEMS", trie.num_items + 1)
    assert torch.equal(constrained_beam_search(model, input_ids, mask, trie, **kwargs).scores, vocabulary.scores)


def _spy_normalisers(monkeypatch) -> list[str]:
    import inference.recommender as recommender

    seen: list[str] = []
    real = recommender.constrained_beam_search

    def spy(*args, **kwargs):
        seen.append(args[10] if len(args) > 10 else kwargs.get("normaliser", "auto"))
        return real(*args, **kwargs)

    monkeypatch.setattr(recommender, "constrained_beam_search", spy)
    return seen


def test_the_key_reaches_the_beam_search_from_the_recommender(coded, monkeypatch):
    from inference.recommender import llm_recommender

    model, hf_tok, item_tok = coded
    seen = _spy_normalisers(monkeypatch)
    histories = [["item0", "item1"], ["item5"]]
    for mode in ("children", "vocabulary", "auto"):
        llm_recommender(model, hf_tok, item_tok, k=3, num_beams=6, decode_normaliser=mode)(["u1", "u2"], histories)
        assert seen[-1] == mode
    with pytest.raises(ValueError, match="decode_normaliser must be one of"):
        llm_recommender(model, hf_tok, item_tok, k=3, num_beams=6, decode_normaliser="exact")


@pytest.fixture
def head_run(tmp_path, tiny_dataset, tiny_split, tiny_chat_tokenizer, tiny_llama):
    """A full-model run with an item head (cluster, then the item's own token) and its split."""
    from tests.inference.test_item_head_override import _head_run, _set_head

    _head_run(tmp_path / "run", tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    _set_head(tmp_path / "run", 0.7)
    tiny_split.save(tmp_path / "split")
    return tmp_path / "run", tmp_path / "split", len(tiny_dataset.item_ids())


def test_evaluate_and_the_cache_decode_with_the_key_and_record_the_resolved_mode(head_run, tmp_path, monkeypatch):
    from alignrec.cli import main
    from inference.cache import read_manifest
    from inference.cache.model_recommender import model_identity
    from inference.trained_run import run_normaliser

    run, split, n = head_run
    seen = _spy_normalisers(monkeypatch)
    base = ["evaluate", "--model_dir", str(run), "--split_dir", str(split), "--part", "valid", "--ks", "1", "3",
            "--num_beams", "6", "--batch_size", "2", "--device", "cpu"]
    assert main([*base, "--out_dir", str(tmp_path / "e_children"), "--decode_normaliser", "children"]) == 0
    assert seen and set(seen) == {"children"}
    assert main([*base, "--out_dir", str(tmp_path / "e_auto")]) == 0
    records = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("e_children", "e_auto")}
    assert records["e_children"]["decode_normaliser"] == "children (set)"
    assert records["e_auto"]["decode_normaliser"] == f"vocabulary (auto: {n} items < 100,000)"
    assert records["e_children"]["config"]["EvaluateConfig"]["decode_normaliser"] == "children"

    seen.clear()
    assert main(["cache", "build", "--model_dir", str(run), "--split_dir", str(split), "--out_dir",
                 str(tmp_path / "c"), "--k", "3", "--num_beams", "6", "--device", "cpu",
                 "--decode_normaliser", "children"]) == 0
    assert seen and set(seen) == {"children"}
    assert read_manifest(tmp_path / "c")["model"].endswith("#decode_normaliser=children")
    assert "#" not in model_identity(run)["model"]  # exact scores: the tag caches were built with before the key
    assert run_normaliser(run, "auto") == "vocabulary"
    monkeypatch.setattr(sampled_softmax, "AUTO_SAMPLED_MIN_ITEMS", n)  # auto at scale: children, the same cache
    assert run_normaliser(run, "auto") == "children"
    with pytest.raises(ValueError, match="needs --recommender model"):
        from inference.cache.cli import CacheBuildConfig

        CacheBuildConfig(split_dir="s", out_dir="o", recommender="popularity", decode_normaliser="children")


def test_the_cache_stage_inherits_the_evaluated_normaliser(tmp_path, monkeypatch):
    import inference.cache.cli as cache_cli
    import inference.cli as evaluate_cli
    from alignrec.pipeline.runner import StageContext
    from alignrec.pipeline.stages import STAGES, cache, evaluate
    from alignrec.pipeline.stages.cache import _evaluated_decoding
    from tests.pipeline.test_item_prior_stage import _config, _keys

    plain = _keys(tmp_path)
    assert _keys(tmp_path, evaluate={"decode_normaliser": "auto"})["cache"] == plain["cache"]  # the default: unchanged
    assert _keys(tmp_path, evaluate={"decode_normaliser": "children"})["cache"] != plain["cache"]
    cfg = _config(tmp_path, evaluate={"decode_normaliser": "children"})
    assert _evaluated_decoding({}, cfg) == {"decode_normaliser": "children"}
    assert _evaluated_decoding({"decode_normaliser": "vocabulary"}, cfg) == {}  # the cache section's own wins

    seen = {}

    class Stop(Exception):
        pass

    def capture(name):
        def fn(stage_cfg, *args, **kwargs):
            seen[name] = stage_cfg
            raise Stop

        return fn

    monkeypatch.setattr(evaluate_cli, "run_evaluate", capture("evaluate"))
    monkeypatch.setattr(cache_cli, "run_build", capture("cache"))
    dirs = {s.name: cfg.run_dir / s.name for s in STAGES}
    for stage, run in (("evaluate", evaluate.run_evaluate), ("cache", cache.run_cache)):
        ctx = StageContext(cfg.run_dir, dirs[stage], dict(cfg.sections.get(stage, {})), cfg, dirs)
        with pytest.raises(Stop):
            run(ctx)
        assert seen[stage].decode_normaliser == "children"  # the cache decodes as evaluated
