"""Trie-constrained beam search that prefills each prompt once and decodes exactly ``code_len`` tokens.

HF ``generate(num_beams=B)`` copies the prompt to every beam before the prefill (B prefills per user). Here a
batch of left-padded prompts is prefilled once, the KV cache is expanded to the beams afterwards, and each
step scores only the trie children of every beam of every row, as one flat (CSR) list of edges: the logit of
each child's token minus the row's ``logsumexp`` over the full vocabulary (``log_softmax`` restricted to the
allowed tokens, so scores are true sequence log-probs), then the top ``beams`` edges of each row. Memory per
step is O(edges of the live beams), not ``beams x`` the largest cluster. Beams with no valid continuation keep a
``-inf`` score and are dropped at the end, so an invalid item is never emitted.

Scoring without the vocabulary's logits (issue 34): with an item-id level the vocabulary holds a token per item,
so a decode step's ``[batch x beams, vocab]`` logits are the dominant cost (written by the model, then read again
for the normaliser; ~7.7 GB at 64 users x 30 beams and 1M items). When the model's output head is a plain linear
map (``trainer.lm_loss.output_head``: tied or untied, with bias, peft token rows) the decode steps run the model's
base decoder alone (``get_decoder()``: its ``last_hidden_state``, no head, no ``output_hidden_states``, so the model
stays picklable) and compute each edge's logit from the gathered head rows of the allowed children and the exact
normaliser in small tiles (``linear_logsumexp``, the one the chunked training loss uses): the same ``log_softmax``
values, without the ``[rows, vocab]`` tensor. The normaliser is still ``O(vocab x hidden)`` per beam per step: that
is what exact sequence log-probs cost.
The prefill keeps the model's own logits (one row per prompt; the first step and the item head read all of it), and
a short guard forward on a few prompts checks that decoder and head reproduce the model's logits; a model that does
not (a logit transform, an unsupported module, no decoder) decodes from the model's logits, as before.

With an item head (``item_head_weight`` > 0, a model trained with ``trainer``'s flat item loss) the search ranks by
``log p(codes) + weight * log p_head(item)``, the head's term spread over the path so it steers every depth of the
beam, not only the final list (``inference.item_head_scores``).

Cost per user with exact scores (``normaliser`` vocabulary): ``O(vocab x hidden)`` for the prefill row and for each
beam's normaliser at each decode step, plus ``O(items)`` for the item head. With an item-id level (vocab ~ items)
decoding therefore grows linearly with the catalogue; everything else grows with the live beams' children only.

``normaliser`` children (``inference.decode_normaliser``; ``auto`` picks it from 100,000 items): each step's log-prob
is normalised over the trie children of the beam's node instead (``children_log_softmax``: the log-prob under the
trie-constrained model), over all of them before the exclusion and allowed masks, so removing an item does not
inflate its siblings. The item head adds ``weight * (head logit + prior bias)`` at the leaf edge only
(``inference.item_head_scores.LeafHeadScores``: no pass over the items). With a plain linear head the prefill runs
the base decoder too (no ``[batch, vocab]`` row) and the guard runs once per model (``head_reproduces_once``), so
the cost per user is ``O(children of the live beams x hidden)`` plus the model's forwards, whatever the catalogue.
A model that fails the guard decodes from its logits, normalised over the children the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from alignrec.recommenders.sampled_softmax import linear_logsumexp
from inference.beam_scoring import (
    NEG_INF,
    base_decoder,
    children_log_softmax,
    contenders,
    edge_logits,
    head_reproduces,
    head_reproduces_once,
    isin_sorted,
    linear_output_head,
    row_logsumexp,
    segmented_topk,
)
from inference.decode_normaliser import resolve_normaliser
from inference.item_head_scores import ItemHeadScores, LeafHeadScores
from inference.trie import ItemTrie


@dataclass
class BeamSearchOutput:
    """Final beams per row, best first: item indices (-1 for dead beams) and sequence log-probs (-inf if dead)."""

    items: torch.Tensor  # [batch, beams] int64
    scores: torch.Tensor  # [batch, beams] float32


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def constrained_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: ItemTrie,
    num_beams: int,
    exclude: Sequence[Sequence[int]] | None = None,
    allowed: Sequence[Sequence[int] | None] | None = None,
    node_bias: Sequence[torch.Tensor] | None = None,
    item_head_weight: float = 0.0,
    item_prior: Any = None,
    normaliser: str = "auto",
) -> BeamSearchOutput:
    """Top ``num_beams`` catalogue items per row of left-padded ``input_ids [batch, prompt_len]``.

    ``exclude[row]`` lists item indices (into the trie's rows) that row may not return. ``allowed[row]`` (None =
    unrestricted) lists the only item indices that row may return, e.g. a scenario's catalogue: a per-row mask
    over the trie, applied at every depth like the exclusion. ``node_bias[d]`` (``[nodes at depth d + 1]``, e.g.
    ``ItemTrie.popularity_bias``) is added to the score of every edge into a depth-``d + 1`` node, so it steers
    the beam at every depth and the returned scores include it. ``item_head_weight``: see the module docstring
    (needs an item-id level: a last code token unique to each item). ``item_prior``
    (``inference.item_prior.ItemPriorRows``, one row per prompt): a content bias in the item head's logits (needs
    ``item_head_weight`` > 0). ``normaliser``: ``auto``, ``vocabulary`` (exact sequence log-probs) or ``children``
    (see the module docstring; ``auto`` resolves on the trie's catalogue size).
    """
    mode = resolve_normaliser(normaliser, trie.num_items)
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask must both be [batch, prompt_len]")
    if bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("prompts must be left-padded (the last position of every row must be a real token)")
    if exclude is not None and len(exclude) != input_ids.shape[0]:
        raise ValueError(f"exclude has {len(exclude)} rows for a batch of {input_ids.shape[0]} prompts")
    if allowed is not None and len(allowed) != input_ids.shape[0]:
        raise ValueError(f"allowed has {len(allowed)} rows for a batch of {input_ids.shape[0]} prompts")
    if node_bias is not None and [b.numel() for b in node_bias] != trie.num_nodes[1:]:
        raise ValueError(f"node_bias must hold one score per trie node at depths 1..{trie.code_len} "
                         f"({trie.num_nodes[1:]}), got {[b.numel() for b in node_bias]}")
    if item_prior is not None and (not item_head_weight or len(item_prior) != input_ids.shape[0]):
        raise ValueError(f"item_prior ({len(item_prior)} rows) acts through the item head: it needs item_head_weight "
                         f"> 0 (got {item_head_weight}) and one row per prompt ({input_ids.shape[0]})")
    device = _model_device(model)
    batch = input_ids.shape[0]
    excluded = trie.excluded_nodes(exclude) if exclude is not None else None
    restricted = live = None
    if allowed is not None and any(a is not None for a in allowed):
        restricted, live = trie.allowed_nodes(allowed, exclude)
        restricted, live = restricted.to(device), [k.to(device) for k in live]  # [batch], per depth
    trie = trie.to(device)  # lookups run where the logits are, no per-step host copies
    excluded = [e.to(device) for e in excluded] if excluded is not None else None
    node_bias = [b.to(device) for b in node_bias] if node_bias is not None else None
    rows = torch.arange(batch, device=device).unsqueeze(1)  # [batch, 1]

    attention_mask = attention_mask.to(device)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at 0
    input_ids = input_ids.to(device)
    # logits [batch, vocab] in the model's dtype (never copied whole) or None; hidden [batch, h] (children, head path)
    cache, logits, hidden, head, decoder = _prefill(model, mode, trie.code_len, input_ids, attention_mask,
                                                    position_ids)
    prior = item_prior.to(device) if item_prior is not None else None
    head_scores = None
    if item_head_weight and mode == "children":
        head_scores = LeafHeadScores(trie, item_head_weight, prior, hidden, head, logits)
    elif item_head_weight:
        head_scores = ItemHeadScores(trie, logits, item_head_weight, prior)
    next_pos = position_ids[:, -1:] + 1  # [batch, 1]

    nodes = torch.zeros(batch, 1, dtype=torch.int64, device=device)  # [batch, states]: one root per row at first
    scores = torch.zeros(batch, 1, device=device)
    for depth in range(trie.code_len):
        states = nodes.shape[1]
        live_states = torch.where(torch.isfinite(scores), nodes, -1).view(-1)  # dead beams have no children
        owner, child, tokens = trie.children_csr(depth, live_states)  # [edges]: only real children, no padding
        row = owner // states  # [edges]
        step = None
        if mode == "children":  # over every child of the beam's node, before the per-row masks
            z = logits[owner, tokens] if hidden is None else edge_logits(hidden, head.weight, head.bias, owner, tokens)
            step = children_log_softmax(z, owner, batch * states)  # [edges]
        keep = None
        if excluded is not None and excluded[depth + 1].numel():
            keep = ~isin_sorted(row * trie.num_nodes[depth + 1] + child, excluded[depth + 1])
        if live is not None:  # restricted rows keep only children with an allowed, non-excluded item below
            ok = isin_sorted(row * trie.num_nodes[depth + 1] + child, live[depth + 1]) | ~restricted[row]
            keep = ok if keep is None else keep & ok
        if keep is not None:
            owner, child, tokens, row = owner[keep], child[keep], tokens[keep], row[keep]
            step = step[keep] if step is not None else None
        if owner.numel() == 0:  # every beam of every row is dead: no item rather than an invalid one
            return BeamSearchOutput(items=torch.full((batch, num_beams), -1, dtype=torch.int64),
                                    scores=torch.full((batch, num_beams), NEG_INF))
        if step is None and hidden is None:  # vocabulary, the model's logits: [batch * states, vocab]
            norm = row_logsumexp(logits)  # [batch * states]: log_softmax's normaliser over the full vocabulary
            step = logits[owner, tokens].float() - norm[owner]  # [edges] = log_softmax(logits)[owner, token]
        elif step is None:  # the same values from the hidden states: gathered head rows, the normaliser in tiles
            # [batch * states] float32, each tile in the model's dtype as its head computes the logits
            norm = linear_logsumexp(hidden, head.weight, bias=head.bias, tile_dtype=hidden.dtype)
            step = edge_logits(hidden, head.weight, head.bias, owner, tokens) - norm[owner]  # [edges]
        if node_bias is not None:
            step = step + node_bias[depth][child]
        if head_scores is not None and (mode == "vocabulary" or depth == trie.code_len - 1):  # children: leaves only
            step = step + head_scores.edge_scores(depth, row, nodes.view(-1)[owner], child, tokens)
        cand = scores.view(-1)[owner] + step  # [edges]
        sub = contenders(cand, owner, row, batch, states, num_beams)  # [some edges]: the rest cannot make a row's top
        if sub is None:
            pick, found = segmented_topk(cand, row, batch, num_beams)  # [batch, beams], best first per row
        else:
            pick, found = segmented_topk(cand[sub], row[sub], batch, num_beams)
            pick = sub[pick]
        scores = torch.where(found, cand[pick], NEG_INF)
        nodes, chosen = child[pick], tokens[pick]  # dead beams hold some real node; their -inf score marks them
        if depth == trie.code_len - 1:
            break
        # expand (first step) or reorder the KV cache to the surviving beams, then feed their tokens
        src = torch.where(found, owner[pick], rows * states).view(-1)  # [batch * beams], within each row
        if depth == 0:
            cache.reorder_cache(src)  # [batch] -> [batch * beams]: the one copy of the prompt's KV
        else:
            _reorder_generated(cache, src, depth)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        if depth == 0:
            attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
            next_pos = next_pos.repeat_interleave(num_beams, dim=0)
        step_inputs = {"input_ids": chosen.view(-1, 1), "attention_mask": attention_mask, "position_ids": next_pos,
                       "past_key_values": cache, "use_cache": True}
        if head is None:
            out = model(**step_inputs)
            logits = out.logits[:, -1]  # [batch * beams, vocab]
        else:  # the decoder alone: what the model's head would read, after the final norm
            out = decoder(**step_inputs)
            hidden = out.last_hidden_state[:, -1]  # [batch * beams, hidden]
        cache = out.past_key_values
        next_pos = next_pos + 1
    alive = torch.isfinite(scores)
    items = torch.where(alive, trie.leaf_item[nodes], torch.full_like(nodes, -1))
    return BeamSearchOutput(items=items.cpu(), scores=scores.cpu())


def _prefill(model: torch.nn.Module, mode: str, code_len: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor) -> tuple[Any, torch.Tensor | None, torch.Tensor | None, Any, Any]:
    """``(cache, logits [batch, vocab] or None, hidden [batch, h] or None, head, decoder)`` after the prompts; head
    and decoder (what decode steps run) are None where decode steps read the model's logits.

    vocabulary: the model's logits row (the first step and the item head read all of it); the head, for decode
    steps when there are any, if decoder and head reproduce the logits (``head_reproduces``, every call). children:
    the base decoder alone when they do (``head_reproduces_once``), so no ``[batch, vocab]`` row exists; else the
    model's logits, and no head.
    """
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": True}
    if mode == "vocabulary":
        head = linear_output_head(model) if code_len > 1 else None  # only decode steps use it
        out = model(**inputs, logits_to_keep=1)
        decoder = base_decoder(model) if head is not None else None  # decode steps run it alone: no logits
        if decoder is None or not head_reproduces(model, decoder, head, input_ids, attention_mask, position_ids):
            head = decoder = None
        return out.past_key_values, out.logits[:, -1], None, head, decoder
    head = linear_output_head(model)
    decoder = base_decoder(model) if head is not None else None
    if decoder is None or not head_reproduces_once(model, decoder, head, input_ids, attention_mask, position_ids):
        out = model(**inputs, logits_to_keep=1)
        return out.past_key_values, out.logits[:, -1], None, None, None
    out = decoder(**inputs)
    return out.past_key_values, None, out.last_hidden_state[:, -1], head, decoder


def _reorder_generated(cache, src: torch.Tensor, depth: int) -> None:
    """Reorder only the ``depth`` generated positions of a ``DynamicCache``.

    Beams of one row share their prompt, so the prompt part of the cache is the same for every beam of a row
    and a beam reorder (which stays within rows) leaves it unchanged: copying it again every step (what
    ``reorder_cache`` does, ~0.8 GB per step for SmolLM2 at 8 users x 20 beams) is pure memory traffic.
    Other cache types fall back to the full ``reorder_cache``.
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers or not all(type(layer) is DynamicLayer for layer in layers):
        cache.reorder_cache(src)
        return
    for layer in layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)  # [batch * beams, heads, seq, head_dim]
            t[:, :, -depth:] = t[src, :, -depth:]


@torch.inference_mode()
def sequence_log_probs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    code_token_ids: torch.Tensor,
) -> torch.Tensor:
    """Teacher-forced log p(code tokens | prompt) of every item for every prompt: ``[batch, num_items]``.

    The brute-force reference the beam search is checked against (cost: one forward per item per prompt).
    """
    device = _model_device(model)
    batch, num_items = input_ids.shape[0], code_token_ids.shape[0]
    code_len = code_token_ids.shape[1]
    ids = torch.cat([
        input_ids.repeat_interleave(num_items, dim=0), code_token_ids.repeat(batch, 1),
    ], dim=1)  # [batch * items, prompt + code_len]
    mask = torch.cat([attention_mask.repeat_interleave(num_items, dim=0), torch.ones(batch * num_items, code_len,
                                                                                      dtype=attention_mask.dtype)], 1)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).logits
    logp = torch.log_softmax(logits[:, -code_len - 1:-1].float(), dim=-1).cpu()  # [batch * items, code_len, vocab]
    picked = logp.gather(-1, ids[:, -code_len:].unsqueeze(-1)).squeeze(-1).sum(-1)
    return picked.view(batch, num_items)
