"""Batch recommendation: prompt strings -> top-K distinct catalogue items with sequence log-probs.

All items share one code length, so the final beams of a row are distinct items by construction; items to
exclude (e.g. the user's history) are pruned inside the search, so they never take a beam.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from inference.beam_search import constrained_beam_search
from inference.decode_normaliser import describe_normaliser
from inference.trie import ItemTrie

logger = logging.getLogger(__name__)

_TRIE_CACHE: dict[tuple[str, str], ItemTrie] = {}
_TRIE_CACHE_SIZE = 4
_ROWS_CACHE: dict[str, tuple[list[str], dict[str, int]]] = {}  # content hash -> (item ids, {item id: row})


def build_item_trie(item_tokenizer: Any, hf_tokenizer: Any) -> ItemTrie:
    """The trie of ``item_tokenizer``'s items under ``hf_tokenizer``'s code-token ids (cached per content)."""
    token_ids = np.asarray(item_tokenizer.item_token_ids(hf_tokenizer), dtype=np.int64)  # [N, L]
    key = (str(getattr(item_tokenizer, "content_hash", "")), hashlib.blake2b(token_ids.tobytes(), digest_size=16).hexdigest())
    trie = _TRIE_CACHE.get(key)
    if trie is None:
        trie = ItemTrie(token_ids, item_tokenizer.item_ids)
        if len(_TRIE_CACHE) >= _TRIE_CACHE_SIZE:
            _TRIE_CACHE.pop(next(iter(_TRIE_CACHE)))
        _TRIE_CACHE[key] = trie
        logger.info("built %r (%.1f MB)", trie, trie.nbytes() / 2**20)
    return trie


def _item_rows(item_tokenizer: Any) -> tuple[list[str], dict[str, int]]:
    """``(item ids, {item id: trie row})`` of ``item_tokenizer``, cached per content hash (the ids are part of it):
    building them is O(catalogue) (~0.4 s at 1M items), too much to repeat for every batch of users."""
    key = str(getattr(item_tokenizer, "content_hash", "") or "")
    if key and key in _ROWS_CACHE:
        return _ROWS_CACHE[key]
    item_ids = list(item_tokenizer.item_ids)
    rows = (item_ids, {item: i for i, item in enumerate(item_ids)})
    if key:
        if len(_ROWS_CACHE) >= _TRIE_CACHE_SIZE:
            _ROWS_CACHE.pop(next(iter(_ROWS_CACHE)))
        _ROWS_CACHE[key] = rows
    return rows


def tokenize_prompts(hf_tokenizer: Any, prompts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Token ids of each prompt, as SFT trained on them (TRL: no extra BOS on chat-formatted prompts)."""
    encoded = hf_tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} tokenizes to no tokens; every prompt needs at least one token")
    return encoded


def left_pad(batch: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` ``[batch, max_len]`` (pad id is masked, so any id works)."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.as_tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask


def recommend(
    model: torch.nn.Module,
    hf_tokenizer: Any,
    item_tokenizer: Any,
    prompts: Sequence[str],
    k: int,
    num_beams: int,
    exclude: Sequence[Iterable[str]] | None = None,
    *,
    batch_size: int = 8,
    trie: ItemTrie | None = None,
    add_special_tokens: bool = False,
    show_progress: bool = False,
    allowed: Sequence[Iterable[str] | None] | None = None,
    node_bias: Sequence[torch.Tensor] | None = None,
    item_head_weight: float = 0.0,
    item_prior: Any = None,
    histories: Sequence[Iterable[str]] | None = None,
    normaliser: str = "auto",
    prior_queries: np.ndarray | None = None,
) -> list[list[tuple[str, float]]]:
    """Top-``k`` (item_id, log-prob) per prompt, best first, from a trie-constrained beam search.

    ``exclude[i]`` lists item ids prompt ``i`` may not return (ids unknown to ``item_tokenizer`` cannot be
    returned anyway and are ignored). ``allowed[i]`` (None = all) lists the only item ids prompt ``i`` may
    return, e.g. a scenario's catalogue; pass the same list object for rows of one scenario (it is resolved
    to trie rows once per object). A row can hold fewer than ``k`` items only when fewer than ``k``
    catalogue items remain after exclusion or every other beam died; it never holds an invalid item.
    Prompts are batched by token length (less padding) and results returned in input order. ``node_bias``:
    per-depth edge scores added inside the search (``popularity_prior_bias``); the scores then include them.
    ``item_head_weight``: fuse a model's flat item head (``constrained_beam_search``; the run's
    ``trainer.read_item_head_weight``). ``item_prior`` (``inference.item_prior.ItemVectorPrior``): the content
    prior in the item head, from ``histories[i]`` (prompt ``i``'s history item ids; ids without a trie row are
    skipped), or from ``prior_queries[i]`` when given (``[prompts, dim]`` vectors in the item vectors' space, e.g. a
    request's sentence vector; histories then not read); needs ``item_head_weight`` > 0. ``normaliser``
    (``inference.decode_normaliser``: auto, vocabulary or children): what each beam step normalises over
    (``constrained_beam_search``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if num_beams < k:
        raise ValueError(f"num_beams ({num_beams}) must be >= k ({k}): the beams are the candidate list")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if exclude is not None and len(exclude) != len(prompts):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(prompts)} prompts; give one list per prompt")
    if allowed is not None and len(allowed) != len(prompts):
        raise ValueError(f"allowed has {len(allowed)} entries for {len(prompts)} prompts; give one per prompt")
    if prior_queries is not None:
        if item_prior is None or len(prior_queries) != len(prompts):
            raise ValueError("prior_queries needs item_prior and one query vector per prompt")
    elif item_prior is not None and (histories is None or len(histories) != len(prompts)):
        raise ValueError("item_prior needs histories (one list of history item ids per prompt) or prior_queries")
    if not prompts:
        return []
    trie = trie if trie is not None else build_item_trie(item_tokenizer, hf_tokenizer)
    item_ids, row_of = _item_rows(item_tokenizer)
    if trie.num_items != len(item_ids):
        raise ValueError(f"the trie holds {trie.num_items} items but the item tokenizer {len(item_ids)}; rebuild the trie")
    resolved: dict[int, np.ndarray] = {}  # id(allowed list) -> trie rows, so a shared scenario list is resolved once

    def rows_of(items: Iterable[str] | None) -> np.ndarray | None:
        if items is None:
            return None
        if id(items) not in resolved:
            resolved[id(items)] = np.asarray([row_of[i] for i in items if i in row_of], dtype=np.int64)
        return resolved[id(items)]

    allowed_rows = [rows_of(a) for a in allowed] if allowed is not None else None
    encoded = tokenize_prompts(hf_tokenizer, prompts, add_special_tokens)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    was_training = model.training
    model.eval()
    results: list[list[tuple[str, float]]] = [[] for _ in prompts]
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="recommend", unit="batch", disable=not show_progress):
            idx = order[start:start + batch_size]
            input_ids, mask = left_pad([encoded[i] for i in idx])
            excl = None
            if exclude is not None:
                excl = [[row_of[item] for item in exclude[i] if item in row_of] for i in idx]
            allow = [allowed_rows[i] for i in idx] if allowed_rows is not None else None
            prior = None
            if prior_queries is not None:
                prior = item_prior.query_rows(np.asarray(prior_queries)[idx])
            elif item_prior is not None:
                prior = item_prior.rows([[row_of[item] for item in histories[i] if item in row_of] for i in idx])
            out = constrained_beam_search(model, input_ids, mask, trie, num_beams, excl, allow, node_bias,
                                          item_head_weight, prior, normaliser)
            for row, i in enumerate(idx):
                pairs = zip(out.items[row, :k].tolist(), out.scores[row, :k].tolist(), strict=True)
                results[i] = [(item_ids[item], score) for item, score in pairs if item >= 0]
    finally:
        model.train(was_training)
    return results


def popularity_prior_bias(trie: ItemTrie, item_ids: Sequence[str], item_counts: Mapping[str, float],
                          strength: float) -> list[torch.Tensor] | None:
    """``ItemTrie.popularity_bias`` for training counts ``item_counts`` (+1 each, so unseen items are finite).

    ``strength`` 0 returns None (plain log-probs); 1 ranks by log p(item | user) - log p_train(item).
    """
    if strength == 0:
        return None
    weights = np.asarray([float(item_counts.get(item, 0)) + 1.0 for item in item_ids])
    return trie.popularity_bias(weights, strength)


def llm_recommender(
    model: torch.nn.Module,
    hf_tokenizer: Any,
    item_tokenizer: Any,
    k: int,
    num_beams: int,
    exclude_history: bool = True,
    batch_size: int = 8,
    prompt_fn: Any = None,
    *,
    scenario_items: Mapping[str, Sequence[str]] | None = None,
    scenario_prompts: bool = False,
    item_scenario: Mapping[str, str] | None = None,
    popularity_penalty: float = 0.0,
    item_counts: Mapping[str, float] | None = None,
    user_knowledge: Mapping[str, str] | None = None,
    item_head_weight: float = 0.0,
    prompt_format: str = "chat",
    item_vector_prior_weight: float = 0.0,
    item_vectors: Any = None,
    decode_normaliser: str = "auto",
) -> Any:
    """A ``recommend_fn(user_ids, histories)`` (the evaluation / cache interface) over ``recommend``.

    ``prompt_fn(history, item_tokenizer, hf_tokenizer) -> str`` defaults to ``sft_tasks.seqrec_prompt``, the
    exact prompt the seqrec task trained on.

    Multi-scenario: with ``scenario_items`` (``{scenario: item ids}``) the function also takes
    ``scenarios=[s, ...]`` and the beam search of row ``i`` is restricted to ``scenarios[i]``'s items.
    ``scenario_prompts`` (a model trained with ``TaskConfig.scenario_prompts``) builds
    ``sft_tasks.seqrec_scenario_prompt`` instead, tagging history items with ``item_scenario[item]``.

    ``popularity_penalty`` > 0 (with ``item_counts``, the training interactions per item) decodes with
    ``log p(item | user) - popularity_penalty * log p_train(item)`` at every depth of the beam: a model that
    learned the training marginal too well gives the long tail its beams back (choose it on valid users).

    ``user_knowledge`` (``{user_id: text}``, ``trainer.read_user_knowledge(run)``): a model whose prompts carried
    each user's knowledge text gets the same text in front of its prompt here (users without one: none, as in
    training); ``prompt_fn`` then takes ``user_knowledge=``.

    ``item_head_weight`` (``trainer.read_item_head_weight(run)``): a model trained with the flat item head ranks
    by ``log p(codes) + weight * log p_head(item)``. ``item_vector_prior_weight`` > 0 (with ``item_vectors``,
    ``recdata.item_vectors.ItemEmbeddings``: the run's embeddings stage) adds ``that weight * cos(u, v_item)`` to
    the head's logits, ``u`` the unit mean of the history's unit vectors (``inference.item_prior``); 0 = none.

    ``prompt_format`` (``trainer.read_prompt_format(run)``): how the run's tasks wrote prompts (chat, plain or
    codes); passed to ``prompt_fn`` as ``prompt_format=`` unless it is the default ``chat``.

    ``decode_normaliser`` (auto, vocabulary or children; ``inference.decode_normaliser``): what each beam step's
    log-prob is normalised over; ``auto`` resolves on the catalogue size (logged once here).
    """
    if scenario_prompts and (scenario_items is None or item_scenario is None):
        raise ValueError("scenario_prompts needs scenario_items (the target scenario) and item_scenario (history tags)")
    if prompt_fn is None:
        from sft_tasks import seqrec_prompt as prompt_fn
    trie = build_item_trie(item_tokenizer, hf_tokenizer)
    logger.info("decode_normaliser: %s", describe_normaliser(decode_normaliser, trie.num_items))  # checks the value
    if popularity_penalty and item_counts is None:
        raise ValueError("popularity_penalty needs item_counts (training interactions per item)")
    node_bias = popularity_prior_bias(trie, list(item_tokenizer.item_ids), item_counts or {}, popularity_penalty)
    item_prior = None
    if item_vector_prior_weight:
        from inference.item_prior import ItemVectorPrior

        if item_vectors is None or not item_head_weight:
            raise ValueError("item_vector_prior_weight needs item_vectors and an item head (item_head_weight > 0)")
        item_prior = ItemVectorPrior(trie, list(item_tokenizer.item_ids), item_vectors, item_vector_prior_weight,
                                     device=next(model.parameters()).device)
    catalogues = {name: list(items) for name, items in (scenario_items or {}).items()}

    def knowledge(user_id: str) -> dict[str, str | None]:
        return {"user_knowledge": user_knowledge.get(str(user_id))} if user_knowledge else {}

    fmt = {"prompt_format": prompt_format} if prompt_format != "chat" else {}  # a custom prompt_fn may not take it

    def recommend_fn(user_ids: Sequence[str], histories: Sequence[Sequence[str]],
                     scenarios: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        if len(user_ids) != len(histories):
            raise ValueError(f"got {len(user_ids)} user ids but {len(histories)} histories")
        if scenarios is not None:
            unknown = sorted(set(scenarios) - set(catalogues))
            if unknown or len(scenarios) != len(histories):
                raise ValueError(f"scenarios must name one of {sorted(catalogues)} per row; got {len(scenarios)} "
                                 f"for {len(histories)} rows, unknown {unknown}")
        if scenario_prompts:
            if scenarios is None:
                raise ValueError("this model was trained with scenario prompts: pass scenarios=[...] (the target "
                                 "scenario of each row)")
            from sft_tasks import seqrec_scenario_prompt

            prompts = [seqrec_scenario_prompt(list(h), [item_scenario.get(i, "") for i in h], s, item_tokenizer,
                                              hf_tokenizer, **knowledge(u), **fmt)
                       for u, h, s in zip(user_ids, histories, scenarios, strict=True)]
        else:
            prompts = [prompt_fn(list(h), item_tokenizer, hf_tokenizer, **knowledge(u), **fmt)
                       for u, h in zip(user_ids, histories, strict=True)]
        return recommend(model, hf_tokenizer, item_tokenizer, prompts, k, num_beams,
                         exclude=[list(h) for h in histories] if exclude_history else None,
                         batch_size=batch_size, trie=trie,
                         allowed=[catalogues[s] for s in scenarios] if scenarios is not None else None,
                         node_bias=node_bias, item_head_weight=item_head_weight, item_prior=item_prior,
                         histories=histories if item_prior is not None else None, normaliser=decode_normaliser)

    return recommend_fn
