"""The padded beam search as shipped before issue 34 (kept verbatim as the exactness reference for the CSR one).

Every step took ``log_softmax`` over the whole vocabulary and padded each beam's children to the largest cluster
of the level; the search itself (normalisation, masks, biases, top-k) is what the CSR search must reproduce.
Argument checks are left out; the KV reorder is ``reorder_cache`` throughout (same values, more copying). The item
head's edge scores are the dense ``[batch, nodes]`` ones of that time too (``reference_item_head_bias``): a
``log_softmax`` over every item, then a scatter per depth, the leaves included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inference.beam_scoring import NEG_INF
from inference.beam_search import BeamSearchOutput
from inference.trie import ItemTrie


@torch.inference_mode()
def padded_beam_search(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: ItemTrie, num_beams: int,
    exclude: Sequence[Sequence[int]] | None = None, allowed: Sequence[Sequence[int] | None] | None = None,
    node_bias: Sequence[torch.Tensor] | None = None, item_head_weight: float = 0.0,
) -> BeamSearchOutput:
    device = next(model.parameters()).device
    batch = input_ids.shape[0]
    excluded = trie.excluded_nodes(exclude) if exclude is not None else None
    live = None
    if allowed is not None and any(a is not None for a in allowed):
        restricted, live = trie.allowed_nodes(allowed, exclude)
        restricted, live = restricted.to(device).view(batch, 1, 1), [k.to(device) for k in live]
    trie = trie.to(device)
    excluded = [e.to(device) for e in excluded] if excluded is not None else None
    node_bias = [b.to(device) for b in node_bias] if node_bias is not None else None
    rows = torch.arange(batch, device=device).unsqueeze(1)  # [batch, 1]

    attention_mask = attention_mask.to(device)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids.to(device), attention_mask=attention_mask, position_ids=position_ids,
                use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [batch, vocab]
    head_bias = None
    if item_head_weight:
        head_bias = reference_item_head_bias(trie, out.logits[:, -1].float(), item_head_weight)
    next_pos = position_ids[:, -1:] + 1  # [batch, 1]

    nodes = torch.zeros(batch, 1, dtype=torch.int64, device=device)
    scores = torch.zeros(batch, 1, device=device)
    for depth in range(trie.code_len):
        states = nodes.shape[1]
        child, tokens, valid = trie.children(depth, nodes)  # [batch, states, width]
        width = child.shape[-1]
        if excluded is not None and excluded[depth + 1].numel():
            keys = rows.unsqueeze(-1) * trie.num_nodes[depth + 1] + child
            valid &= ~torch.isin(keys, excluded[depth + 1])
        if live is not None:
            keys = rows.unsqueeze(-1) * trie.num_nodes[depth + 1] + child  # [batch, states, width]
            valid &= torch.isin(keys, live[depth + 1]) | ~restricted
        step = logp.view(batch, states, -1).gather(-1, tokens)  # [batch, states, width]
        if node_bias is not None:
            step = step + node_bias[depth][child]
        if head_bias is not None:
            step = step + head_bias[depth].gather(1, child.view(batch, -1)).view_as(step)
        cand = (scores.unsqueeze(-1) + step).masked_fill(~valid, NEG_INF).view(batch, states * width)
        take = min(num_beams, states * width)
        scores, flat = cand.topk(take, dim=-1)  # [batch, take], best first
        if take < num_beams:
            scores = torch.cat([scores, scores.new_full((batch, num_beams - take), NEG_INF)], dim=1)
            flat = torch.cat([flat, flat[:, :1].expand(batch, num_beams - take)], dim=1)
        origin = flat // width
        nodes = child.view(batch, -1).gather(1, flat)
        chosen = tokens.view(batch, -1).gather(1, flat)
        if depth == trie.code_len - 1:
            break
        cache.reorder_cache((rows * states + origin).view(-1))
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        if depth == 0:
            attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
            next_pos = next_pos.repeat_interleave(num_beams, dim=0)
        out = model(input_ids=chosen.view(-1, 1), attention_mask=attention_mask, position_ids=next_pos,
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [batch * beams, vocab]
        next_pos = next_pos + 1
    alive = torch.isfinite(scores)
    items = torch.where(alive, trie.leaf_item[nodes], torch.full_like(nodes, -1))
    return BeamSearchOutput(items=items.cpu(), scores=scores.cpu())


def reference_item_head_bias(trie: ItemTrie, logits: torch.Tensor, weight: float) -> list[torch.Tensor]:
    """``inference.item_head_scores.item_head_bias`` as shipped before issue 34's streaming ``ItemHeadScores``."""
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
