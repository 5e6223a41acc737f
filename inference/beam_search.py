"""Trie-constrained beam search that prefills each prompt once and decodes exactly ``code_len`` tokens.

HF ``generate(num_beams=B)`` copies the prompt to every beam before the prefill (B prefills per user). Here a
batch of left-padded prompts is prefilled once, the KV cache is expanded to the beams afterwards, and each
step scores only the trie children of every beam of every row, as one flat (CSR) list of edges: the logit of
each child's token minus the row's ``logsumexp`` over the full vocabulary (``log_softmax`` restricted to the
allowed tokens, so scores are true sequence log-probs; the normaliser is reduced in row chunks, so no float32
``[rows, vocab]`` log-prob tensor exists beside the logits), then the top ``beams`` edges of each row. Memory
per step is O(edges of the live beams), not ``beams x`` the largest cluster. Beams with no valid continuation
keep a ``-inf`` score and are dropped at the end, so an invalid item is never emitted.

With an item head (``item_head_weight`` > 0, a model trained with ``trainer``'s flat item loss) the prefill's
logits over the item-id tokens are a second, flat distribution over the catalogue; the search ranks by
``log p(codes) + weight * log p_head(item)``, the head's term spread over the path (``item_head_bias``) so it
steers every depth of the beam, not only the final list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from inference.trie import ItemTrie

NEG_INF = float("-inf")


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
) -> BeamSearchOutput:
    """Top ``num_beams`` catalogue items per row of left-padded ``input_ids [batch, prompt_len]``.

    ``exclude[row]`` lists item indices (into the trie's rows) that row may not return. ``allowed[row]`` (None =
    unrestricted) lists the only item indices that row may return, e.g. a scenario's catalogue: a per-row mask
    over the trie, applied at every depth like the exclusion. ``node_bias[d]`` (``[nodes at depth d + 1]``, e.g.
    ``ItemTrie.popularity_bias``) is added to the score of every edge into a depth-``d + 1`` node, so it steers
    the beam at every depth and the returned scores include it. ``item_head_weight``: see the module docstring
    (needs an item-id level: a last code token unique to each item).
    """
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
    out = model(
        input_ids=input_ids.to(device), attention_mask=attention_mask, position_ids=position_ids,
        use_cache=True, logits_to_keep=1,
    )
    cache = out.past_key_values
    logits = out.logits[:, -1]  # [batch, vocab] in the model's dtype; never copied whole
    head_bias = item_head_bias(trie, logits, item_head_weight) if item_head_weight else None
    next_pos = position_ids[:, -1:] + 1  # [batch, 1]

    nodes = torch.zeros(batch, 1, dtype=torch.int64, device=device)  # [batch, states]: one root per row at first
    scores = torch.zeros(batch, 1, device=device)
    for depth in range(trie.code_len):
        states = nodes.shape[1]
        norm = row_logsumexp(logits)  # [batch * states]: log_softmax's normaliser over the full vocabulary
        live_states = torch.where(torch.isfinite(scores), nodes, -1).view(-1)  # dead beams have no children
        owner, child, tokens = trie.children_csr(depth, live_states)  # [edges]: only real children, no padding
        row = owner // states  # [edges]
        keep = None
        if excluded is not None and excluded[depth + 1].numel():
            keep = ~torch.isin(row * trie.num_nodes[depth + 1] + child, excluded[depth + 1])
        if live is not None:  # restricted rows keep only children with an allowed, non-excluded item below
            ok = torch.isin(row * trie.num_nodes[depth + 1] + child, live[depth + 1]) | ~restricted[row]
            keep = ok if keep is None else keep & ok
        if keep is not None:
            owner, child, tokens, row = owner[keep], child[keep], tokens[keep], row[keep]
        if owner.numel() == 0:  # every beam of every row is dead: no item rather than an invalid one
            return BeamSearchOutput(items=torch.full((batch, num_beams), -1, dtype=torch.int64),
                                    scores=torch.full((batch, num_beams), NEG_INF))
        step = logits[owner, tokens].float() - norm[owner]  # [edges] = log_softmax(logits)[owner, token]
        if node_bias is not None:
            step = step + node_bias[depth][child]
        if head_bias is not None:  # [batch, n_{depth+1}] per-row edge scores
            step = step + head_bias[depth][row, child]
        cand = scores.view(-1)[owner] + step  # [edges]
        pick, found = segmented_topk(cand, row, batch, num_beams)  # [batch, beams], best first per row
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
        out = model(
            input_ids=chosen.view(-1, 1), attention_mask=attention_mask, position_ids=next_pos,
            past_key_values=cache, use_cache=True,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1]  # [batch * beams, vocab]
        next_pos = next_pos + 1
    alive = torch.isfinite(scores)
    items = torch.where(alive, trie.leaf_item[nodes], torch.full_like(nodes, -1))
    return BeamSearchOutput(items=items.cpu(), scores=scores.cpu())


def row_logsumexp(logits: torch.Tensor, max_elements: int = 1 << 20) -> torch.Tensor:
    """``logsumexp`` of every row of ``logits [rows, vocab]`` in float32, ``[rows]``.

    ``x - row_logsumexp(x)`` is ``log_softmax(x.float())`` at any entry, but rows are reduced in chunks of at most
    ``max(max_elements, vocab)`` elements, so no float32 ``[rows, vocab]`` copy is made (at 1M item tokens, 64
    users x 30 beams that copy alone is ~7.7 GB): only the logits themselves are held whole. Chunks are small
    (4 MB of float32 by default) so they stay in cache.
    """
    per_chunk = max(1, max_elements // max(1, logits.shape[-1]))
    if logits.shape[0] <= per_chunk:
        return torch.logsumexp(logits.float(), dim=-1)
    return torch.cat([torch.logsumexp(logits[i:i + per_chunk].float(), dim=-1)
                      for i in range(0, logits.shape[0], per_chunk)])


def segmented_topk(values: torch.Tensor, segment: torch.Tensor, num_segments: int,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best ``values [n]`` of every segment: (positions ``[num_segments, k]``, found ``[num_segments, k]``).

    ``segment [n]`` (sorted, in ``[0, num_segments)``) names each value's segment; a segment with fewer than ``k``
    values is padded with ``found=False`` slots (position clamped to a real one). Best first; equal values keep
    their input order (stable sorts), so all memory is ``O(n + num_segments * k)``: no ``[segments, widest]``
    padding, which is what a very unequal trie level would cost.
    """
    order = torch.sort(values, descending=True, stable=True).indices  # [n] best first overall
    order = order[torch.sort(segment[order], stable=True).indices]  # [n] by segment, best first within each
    counts = torch.bincount(segment, minlength=num_segments)  # [segments]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(k, device=values.device)
    found = slot < counts.unsqueeze(1)  # [segments, k]
    pos = (starts.unsqueeze(1) + slot).clamp(max=max(values.numel() - 1, 0))
    return order[pos], found


def item_head_bias(trie: ItemTrie, logits: torch.Tensor, weight: float) -> list[torch.Tensor]:
    """Per-depth, per-row edge scores that add ``weight * log p_head(item)`` along each item's path.

    ``logits [batch, vocab]`` at the prompt's last position; ``p_head`` is their softmax over the items' last
    tokens (the item-id level, what the flat item loss trained). A node's head score is the log-sum of its items'
    probabilities, and the edge into node ``v`` (parent ``u``) gets ``weight * (S(v) - S(u))``: the sum along a
    path telescopes to ``weight * log p_head(item)`` (the root's S is 0), and the beam sees the head's opinion of
    a whole subtree at every depth. ``out[d]`` is ``[batch, nodes at depth d + 1]``.
    """
    leaf_tokens = trie.leaf_tokens()
    head = torch.log_softmax(logits[:, leaf_tokens].float(), dim=-1)  # [batch, items] in item-index order
    batch = head.shape[0]
    sums = [torch.zeros(batch, 1, device=head.device)]
    for d in range(1, trie.code_len + 1):
        nodes = trie.item_nodes[d].unsqueeze(0).expand(batch, -1)
        peak = torch.full((batch, trie.num_nodes[d]), NEG_INF, device=head.device).scatter_reduce(
            1, nodes, head, reduce="amax")
        total = torch.zeros_like(peak).scatter_add_(1, nodes, (head - peak.gather(1, nodes)).exp())
        sums.append(peak + total.log())
    out = []
    for d in range(1, trie.code_len + 1):
        parent = trie.node_parents(d)  # [n_d] parent at depth d - 1
        out.append(weight * (sums[d] - sums[d - 1][:, parent]))
    return out


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
