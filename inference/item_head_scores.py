"""The item head's term in the beam search: ``weight * log p_head(item)`` spread over each item's trie path.

Why a module of its own: a model trained with ``trainer``'s flat item loss has a second, flat distribution over the
catalogue in its prefill logits (the item-id tokens). Turning it into per-edge scores that steer every depth of the
beam is a job apart from the search: one streaming pass over the items' logits per prompt (the exact normaliser of
``p_head`` needs every item, but nothing ``[batch, items]`` is kept), log-sums up the trie, and a guard for subtrees
far below the row's best item. ``inference.beam_search`` asks ``ItemHeadScores`` for the scores of the edges it
scores; ``item_head_bias`` gives the same scores densely (small catalogues, tests, analysis). A content prior
(``inference.item_prior``) enters here, in the head's logits, so it steers every depth of the beam too.
``LeafHeadScores`` is the term ``decode_normaliser`` children uses: the head's logit at the leaf edges only, no
pass over the items.
"""

from __future__ import annotations

from typing import Any

import torch

from inference.beam_scoring import NEG_INF, edge_logits
from inference.trie import ItemTrie


class ItemHeadScores:
    """Per-edge scores that add ``weight * log p_head(item)`` along each item's path, computed from the prefill.

    ``logits [batch, vocab]`` at the prompt's last position; ``p_head`` is their softmax over the items' last
    tokens (the item-id level, what the flat item loss trained). A node's head score ``S(v)`` is the log-sum of
    its items' probabilities, and the edge into node ``v`` (parent ``u``) gets ``weight * (S(v) - S(u))``: the sum
    along a path telescopes to ``weight * log p_head(item)`` (the root's S is 0), and the beam sees the head's
    opinion of a whole subtree at every depth.

    Cost per row: one streaming pass over the items' logits (``exp(logit - row max)`` summed into each item's parent
    node, in column blocks; the exact normaliser of ``p_head`` needs every item) plus ``O(nodes)`` above the leaves.
    A parent whose sum falls below ``UNDERFLOW_GUARD`` (its best item ~58 nats under the row's best) would lose
    float32 precision, so such rows are redone with a per-parent max. A leaf's score is read from ``logits`` only
    for the edges a beam step scores: nothing ``[batch, items]`` is kept.

    ``prior`` (``inference.item_prior.ItemPriorRows``, None = none): a per-row bias added to the head's item logits
    before the softmax (the content prior, ``item_vector_prior_weight``), read block by block with the logits in
    the streaming pass and per edge at the leaves; ``logits`` itself is never changed (``log p(codes)`` reads it).
    """

    UNDERFLOW_GUARD = 1e-25
    COLUMN_BLOCK = 16384  # items per block of the streaming pass: [batch, 16,384] floats

    def __init__(self, trie: ItemTrie, logits: torch.Tensor, weight: float, prior: Any = None) -> None:
        self.weight, self.logits, self.code_len, self.prior = float(weight), logits, trie.code_len, prior
        last = trie.code_len
        first, columns, items = head_columns(trie)
        self.leaf_item = trie.leaf_item  # [N] leaf node -> item (the prior reads leaf edges by item)
        parents = trie.item_nodes[last - 1][items]  # [N] the parent node of each head column's item
        raw = [_items_into_parents(logits, first, columns, parents, trie.num_nodes[last - 1], self.COLUMN_BLOCK,
                                   self.UNDERFLOW_GUARD, prior)]  # [batch, n_{last-1}]
        for d in range(last - 1, 0, -1):  # up the trie: O(nodes)
            raw.append(_segment_logsumexp(raw[-1], trie.node_parents(d), trie.num_nodes[d - 1]))
        raw.reverse()  # raw[d]: log-sum-exp of the head logits below each depth-d node; raw[0] [batch, 1]
        self.log_partition = raw[0]  # [batch, 1]: the head's normaliser
        self.sums = [s - self.log_partition for s in raw]  # S(v) = log p_head(items below v)
        self.sums[0] = torch.zeros_like(self.log_partition)  # S(root) = 0 exactly

    def edge_scores(self, depth: int, row: torch.Tensor, parent: torch.Tensor, child: torch.Tensor,
                    tokens: torch.Tensor) -> torch.Tensor:
        """``[edges]`` head term of edges ``parent -> child`` (nodes at ``depth`` and ``depth + 1``) of rows ``row``;
        ``tokens``: the edges' tokens (a leaf's is its item-id token)."""
        if depth + 1 == self.code_len:  # a leaf: S = log p_head(item)
            below = self.logits[row, tokens].float() - self.log_partition[row, 0]
            if self.prior is not None:
                below = below + self.prior.items(row, self.leaf_item[child], self.COLUMN_BLOCK)
        else:
            below = self.sums[depth + 1][row, child]
        return self.weight * (below - self.sums[depth][row, parent])


class LeafHeadScores:
    """The item head's term under ``decode_normaliser`` children: ``weight * (head logit + prior bias)`` of an item,
    added at its leaf edge only (the search calls ``edge_scores`` at the last depth alone).

    Why not ``weight * log p_head(item)`` spread over the path (``ItemHeadScores``): that needs the head's normaliser
    and every subtree's head mass, a pass over all items per prompt (``O(items)``). The head's normaliser
    ``log Z`` is one constant per row: leaving it out shifts every item of a row alike, so no row's ranking changes
    (its scores drop by ``weight * log Z``). What this mode gives up is the steering of the upper depths by each
    subtree's head mass: a cluster the head likes but the code tokens do not can leave the beam before its items are
    scored. Cost: ``O(leaf edges x hidden)`` per batch; the prior (``inference.item_prior.ItemPriorRows``) is read for
    the leaf edges scored only.

    The head's logits come from the prompt's last state ``hidden [batch, h]`` through ``head`` (``trainer.lm_loss``'s
    ``OutputHead``: each item's gathered head row), or, for a model whose head failed the guard, from its prefill
    ``logits [batch, vocab]``. Needs an item-id level (``ItemTrie.leaf_tokens``).
    """

    def __init__(self, trie: ItemTrie, weight: float, prior: Any = None, hidden: torch.Tensor | None = None,
                 head: Any = None, logits: torch.Tensor | None = None) -> None:
        if (logits is None) == (hidden is None or head is None):
            raise ValueError("LeafHeadScores reads either the prefill logits or its hidden state and the head")
        trie.leaf_tokens()  # raises without an item-id level, as ItemHeadScores does
        self.weight, self.prior, self.leaf_item = float(weight), prior, trie.leaf_item
        self.hidden, self.head, self.logits = hidden, head, logits

    def edge_scores(self, depth: int, row: torch.Tensor, parent: torch.Tensor, child: torch.Tensor,
                    tokens: torch.Tensor) -> torch.Tensor:
        """``[edges]`` head term of the leaf edges into ``child`` (leaves) of rows ``row``; ``tokens``: their item-id
        tokens. ``depth`` and ``parent`` are unused (``ItemHeadScores.edge_scores``'s signature)."""
        if self.logits is not None:
            z = self.logits[row, tokens].float()
        else:
            z = edge_logits(self.hidden, self.head.weight, self.head.bias, row, tokens)
        if self.prior is not None:
            z = z + self.prior.items(row, self.leaf_item[child], ItemHeadScores.COLUMN_BLOCK)
        return self.weight * z


def head_columns(trie: ItemTrie) -> tuple[int, torch.Tensor | None, torch.Tensor]:
    """Where the item head's columns lie in the vocabulary: ``(first, columns, items)``. Head column ``j`` is token
    ``first + j`` (``columns`` None: the item-id level is one contiguous block of tokens) or token ``columns[j]``,
    and holds item ``items[j]`` (a trie row). Needs an item-id level (``ItemTrie.leaf_tokens``)."""
    leaf_tokens = trie.leaf_tokens()  # [N] each item's item-id token (item order)
    first = int(leaf_tokens.min())
    order = torch.arange(trie.num_items, device=leaf_tokens.device)
    if int(leaf_tokens.max()) - first + 1 == trie.num_items:  # column j of logits[:, first:first + N] is token first + j
        return first, None, torch.empty_like(order).scatter_(0, leaf_tokens - first, order)
    return first, leaf_tokens, order


def _items_into_parents(logits: torch.Tensor, first: int, columns: torch.Tensor | None, parents: torch.Tensor,
                        num_parents: int, block: int, guard: float, prior: Any = None) -> torch.Tensor:
    """``[batch, num_parents]`` log-sum-exp of the item logits below each parent: items are the columns
    ``first:first + N`` of ``logits`` (``columns`` None) or ``logits[:, columns]``, item column ``j`` under
    ``parents[j]``; ``prior`` (``inference.item_prior.ItemPriorRows``) adds its bias to each block as it is read.
    One pass with the row max as the shift; rows where a parent's sum drops under ``guard`` are redone with a
    per-parent max (exact whatever the spread)."""
    batch, num = logits.shape[0], parents.shape[0]

    def block_of(c: int, rows: slice = slice(None)) -> torch.Tensor:  # [rows, block] float32 item logits
        z = logits[rows, first + c:first + c + block] if columns is None else logits[rows][:, columns[c:c + block]]
        if prior is None:
            return z.float()  # (the last contiguous block may run past the items: only a wider max, as before)
        width = min(block, num - c)  # the items' columns only
        return prior.columns(c, width, rows).add_(z[:, :width].float())  # a new tensor: the logits stay as they are

    peak = torch.full((batch, 1), NEG_INF, device=logits.device)
    for c in range(0, num, block):
        peak = torch.maximum(peak, block_of(c).amax(dim=1, keepdim=True))
    peak.masked_fill_(peak.abs() == float("inf"), 0.0)
    total = torch.zeros(batch, num_parents, device=logits.device)
    for c in range(0, num, block):
        e = (block_of(c) - peak).exp_()  # [batch, block] (a new tensor: the logits stay as they are)
        total.scatter_add_(1, parents[c:c + block].unsqueeze(0).expand(batch, -1), e)
    out = peak + total.log()
    redo = (total < guard).any(dim=1)  # [batch]: a parent's sum lost precision (or underflowed to 0)
    for r in redo.nonzero().flatten().tolist():  # rare: a parent far below the row's best item
        z = torch.cat([block_of(c, slice(r, r + 1)) for c in range(0, num, block)], dim=1)  # [1, N]
        out[r] = _segment_logsumexp(z, parents, num_parents)[0]
    return out


def _segment_logsumexp(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``[rows, num_segments]`` logsumexp of ``values [rows, n]`` over the columns of each segment (``segment [n]``);
    a segment without columns gets ``-inf``."""
    index = segment.unsqueeze(0).expand(values.shape[0], -1)
    peak = torch.full((values.shape[0], num_segments), NEG_INF, device=values.device).scatter_reduce(
        1, index, values, reduce="amax")
    total = torch.zeros_like(peak).scatter_add_(1, index, (values - peak.gather(1, index)).exp_())
    return peak + total.log()


def item_head_bias(trie: ItemTrie, logits: torch.Tensor, weight: float, prior: Any = None) -> list[torch.Tensor]:
    """``ItemHeadScores`` as dense per-depth edge scores: ``out[d]`` is ``[batch, nodes at depth d + 1]``, the score
    of the edge into each node (``[batch, items]`` at the last depth: small catalogues, tests and analysis)."""
    heads = ItemHeadScores(trie, logits, weight, prior)
    batch = logits.shape[0]
    out = []
    for d in range(trie.code_len):
        n = trie.num_nodes[d + 1]
        child = torch.arange(n, device=logits.device).repeat(batch)  # [batch * n]
        row = torch.arange(batch, device=logits.device).repeat_interleave(n)
        tokens = trie.child_tokens[d][child]
        out.append(heads.edge_scores(d, row, trie.node_parents(d + 1)[child], child, tokens).view(batch, n))
    return out


