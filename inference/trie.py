"""A prefix trie over every item's full code-token sequence, held as flat tensors.

Per-position token sets (LC-Rec) let invalid combinations through; a trie over whole sequences does not.
Layout, per depth ``d`` (root = depth 0, items = depth ``L``): nodes at depth ``d`` are the distinct
``d``-token prefixes in lexicographic order, so the children of node ``p`` are the contiguous node range
``offsets[d][p] : offsets[d][p + 1]`` at depth ``d + 1`` and an edge id *is* its child's node id. Memory is
a few integers per edge (a 1M-item, 4-level catalogue holds <= 4M edges, ~150 MB in int64), and every
lookup is a gather or a ``searchsorted`` over all states at once: no Python loop over beams or rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ItemTrie:
    """Trie of ``[N, L]`` token ids; depth-``L`` nodes map one-to-one onto items."""

    def __init__(self, token_ids: np.ndarray | torch.Tensor, item_ids: Sequence[str] | None = None) -> None:
        ids = np.asarray(token_ids.cpu().numpy() if isinstance(token_ids, torch.Tensor) else token_ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"token_ids must be a non-empty [num_items, code_len] array, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token_ids must be integers, got dtype {ids.dtype}")
        if ids.min() < 0:
            row = int(np.argwhere(ids < 0)[0][0])
            raise ValueError(f"token_ids of item {_name(item_ids, row)} hold a negative token id {ids[row].tolist()}")
        if item_ids is not None and len(item_ids) != ids.shape[0]:
            raise ValueError(f"got {len(item_ids)} item ids for {ids.shape[0]} token-id rows; they must match one-to-one")
        ids = ids.astype(np.int64)
        num_items, code_len = ids.shape
        order = np.lexsort(ids.T[::-1])  # rows sorted lexicographically, first column most significant
        sorted_ids = ids[order]
        same = np.all(sorted_ids[1:] == sorted_ids[:-1], axis=1)
        if same.any():
            r = int(np.argmax(same))
            a, b = int(order[r]), int(order[r + 1])
            raise ValueError(
                f"items {_name(item_ids, a)} and {_name(item_ids, b)} share the code tokens {sorted_ids[r].tolist()}; "
                "the item index must be one-to-one (re-run tokenization with collision resolution)"
            )
        self.num_items = num_items
        self.code_len = code_len
        self.key_base = int(ids.max()) + 1  # edge key = parent * key_base + token, globally sorted per depth
        # differs[r, d]: sorted row r starts a new depth-(d+1) node (its (d+1)-prefix differs from row r-1's)
        differs = np.ones((num_items, code_len), dtype=bool)
        differs[1:] = np.logical_or.accumulate(sorted_ids[1:] != sorted_ids[:-1], axis=1)
        row_node = np.zeros((code_len + 1, num_items), dtype=np.int64)  # node of each sorted row at each depth
        row_node[1:] = np.cumsum(differs, axis=0).T - 1
        self.offsets: list[torch.Tensor] = []  # depth d: [n_d + 1] child ranges
        self.child_tokens: list[torch.Tensor] = []  # depth d: [n_{d+1}] token on the edge into each child
        self.edge_keys: list[torch.Tensor] = []  # depth d: [n_{d+1}] parent * key_base + token (sorted)
        self.num_nodes = [1]
        for d in range(code_len):
            first = differs[:, d]  # sorted rows that start a child node at depth d + 1
            parents = row_node[d][first]
            tokens = sorted_ids[first, d]
            counts = np.bincount(parents, minlength=self.num_nodes[d])
            self.offsets.append(torch.from_numpy(np.concatenate([[0], np.cumsum(counts)])))
            self.child_tokens.append(torch.from_numpy(tokens))
            self.edge_keys.append(torch.from_numpy(parents * self.key_base + tokens))
            self.num_nodes.append(int(first.sum()))
        self.max_children = [int((o[1:] - o[:-1]).max()) for o in self.offsets]
        self.leaf_item = torch.from_numpy(order)  # [N] depth-L node -> item index
        # item_nodes[d, i]: item i's ancestor at depth d (used to exclude whole subtrees)
        self.item_nodes = torch.from_numpy(np.empty_like(row_node))
        self.item_nodes[:, torch.from_numpy(order)] = torch.from_numpy(row_node)
        leaves_per_node = [np.bincount(row_node[d], minlength=self.num_nodes[d]) for d in range(code_len + 1)]
        self.leaf_count = [torch.from_numpy(c) for c in leaves_per_node]  # depth d: [n_d] items below each node
        self.last_tokens = torch.from_numpy(ids[:, -1].copy())  # [N] each item's last token, item-index order
        self.unique_last_tokens = bool(np.unique(ids[:, -1]).size == num_items)  # an item-id level

    # ---- lookups --------------------------------------------------------------------------------------
    def children(self, depth: int, nodes: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded children of ``nodes`` (any shape ``S``) at ``depth``: (child ids, tokens, valid), each ``[*S, width]``.

        Padding slots hold a clamped real edge and ``valid=False``; callers must mask them. Every node is padded
        to the largest cluster (``max_children``): with very unequal clusters use ``children_csr``.
        """
        width = self.max_children[depth] if width is None else width
        offsets = self.offsets[depth]
        start = offsets[nodes]  # [*S]
        count = offsets[nodes + 1] - start
        slot = torch.arange(width, dtype=torch.int64, device=nodes.device)
        child = start.unsqueeze(-1) + slot  # [*S, width]
        valid = slot < count.unsqueeze(-1)
        child = child.clamp(max=self.num_nodes[depth + 1] - 1)
        return child, self.child_tokens[depth][child], valid

    def children_csr(self, depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every child of ``nodes [S]`` at ``depth``, flat (CSR): (owner, child ids, tokens), each ``[E]``.

        ``E`` is the total number of children of the given nodes (a node < 0 has none), so one huge cluster costs
        its own edges only, not ``S x`` the largest cluster as the padded ``children`` does. ``owner[e]`` is the
        position in ``nodes`` that edge ``e`` hangs from; edges come grouped by owner, in ``nodes`` order, and
        by token within an owner.
        """
        offsets = self.offsets[depth]
        safe = nodes.clamp(min=0)
        start = offsets[safe]  # [S]
        count = torch.where(nodes >= 0, offsets[safe + 1] - start, torch.zeros_like(start))  # [S]
        total = int(count.sum())
        owner = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), count, output_size=total)
        first = torch.cumsum(count, 0) - count  # [S] position of each owner's first edge
        child = start[owner] + torch.arange(total, device=nodes.device) - first[owner]  # [E]
        return owner, child, self.child_tokens[depth][child]

    def step(self, depth: int, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each ``nodes`` entry along ``tokens`` (same shape), or -1 where that edge does not exist."""
        keys = self.edge_keys[depth]
        query = nodes * self.key_base + tokens.clamp(0, self.key_base - 1)
        pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        found = (keys[pos] == query) & (nodes >= 0) & (tokens >= 0) & (tokens < self.key_base)
        return torch.where(found, pos, torch.full_like(pos, -1))

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of ``prefixes [S, d]`` from the root, or -1 for a path off the trie."""
        if prefixes.shape[-1] > self.code_len:
            raise ValueError(f"prefix length {prefixes.shape[-1]} exceeds the code length {self.code_len}")
        nodes = torch.zeros(prefixes.shape[:-1], dtype=torch.int64, device=prefixes.device)
        for d in range(prefixes.shape[-1]):
            nodes = torch.where(nodes >= 0, self.step(d, nodes.clamp(min=0), prefixes[..., d]), nodes)
        return nodes

    def excluded_nodes(self, exclude: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per depth, sorted keys ``row * n_d + node`` of subtrees whose every item is excluded for that row.

        ``exclude[row]`` lists item indices (row = batch row). A prefix is pruned only when *all* of its items are
        excluded, so beams are never spent on a branch that can only end in an excluded item.
        """
        rows = np.concatenate([np.full(len(e), r, dtype=np.int64) for r, e in enumerate(exclude)] or [np.zeros(0, np.int64)])
        items = np.concatenate([np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude] or [np.zeros(0, np.int64)])
        if items.size and (items.min() < 0 or items.max() >= self.num_items):
            raise ValueError(f"excluded item index out of range [0, {self.num_items}): {items.min()}..{items.max()}")
        leaf_keys = torch.unique(torch.from_numpy(rows) * self.num_items + torch.from_numpy(items))  # distinct pairs
        leaf_rows, leaf_items = leaf_keys // self.num_items, leaf_keys % self.num_items
        out = []
        for d in range(self.code_len + 1):
            node_keys = leaf_rows * self.num_nodes[d] + self.item_nodes[d][leaf_items]
            uniq, counts = torch.unique(node_keys, return_counts=True)  # sorted, as torch.isin/searchsorted want
            out.append(uniq[counts == self.leaf_count[d][uniq % self.num_nodes[d]]])
        return out

    def allowed_nodes(
        self, allowed: Sequence[Sequence[int] | None], exclude: Sequence[Sequence[int]] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-row item restriction (e.g. a scenario's catalogue) as a mask over the trie.

        ``allowed[row]`` lists the item indices that row may return, or None for no restriction. Returns
        ``restricted [batch]`` (bool) and, per depth, the sorted keys ``row * n_d + node`` of nodes with at least
        one allowed item that ``exclude[row]`` does not remove, so a restricted row never spends a beam on a
        prefix that can only end outside its set (the counterpart of ``excluded_nodes``).
        """
        restricted = torch.tensor([a is not None for a in allowed], dtype=torch.bool)
        rows, items = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for r, a in enumerate(allowed):
            if a is None:
                continue
            keep = np.unique(np.asarray(a, dtype=np.int64).reshape(-1))
            if exclude is not None and len(exclude[r]):
                keep = np.setdiff1d(keep, np.asarray(exclude[r], dtype=np.int64).reshape(-1), assume_unique=False)
            rows.append(np.full(len(keep), r, dtype=np.int64))
            items.append(keep)
        row_arr, item_arr = torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(items))
        if item_arr.numel() and (int(item_arr.min()) < 0 or int(item_arr.max()) >= self.num_items):
            raise ValueError(f"allowed item index out of range [0, {self.num_items}): "
                             f"{int(item_arr.min())}..{int(item_arr.max())}")
        keys = [torch.unique(row_arr * self.num_nodes[d] + self.item_nodes[d][item_arr]) for d in range(self.code_len + 1)]
        return restricted, keys

    def node_parents(self, depth: int) -> torch.Tensor:
        """``[n_depth]``: the depth ``depth - 1`` parent of every node at ``depth`` (>= 1)."""
        parent = torch.zeros(self.num_nodes[depth], dtype=torch.int64, device=self.item_nodes.device)
        parent[self.item_nodes[depth]] = self.item_nodes[depth - 1]
        return parent

    def leaf_tokens(self) -> torch.Tensor:
        """``[N]``: each item's last token (item-index order); ``ValueError`` unless every item's is its own."""
        if not self.unique_last_tokens:
            raise ValueError("an item head needs a last code token unique to every item (tokenizer.item_id_level); "
                             "this catalogue's items share last tokens")
        return self.last_tokens

    def popularity_bias(self, item_weights: np.ndarray | torch.Tensor, strength: float) -> list[torch.Tensor]:
        """Per-depth additive scores that subtract ``strength * log(weight)`` of each item, spread over its path.

        ``item_weights [N]`` (trie row order, > 0; e.g. training interactions + 1). The weight of a node is the
        sum of its items' weights; the edge into node ``v`` (parent ``u``) gets ``-strength * (log w(v) -
        log w(u))``. The sum along an item's path telescopes to ``-strength * log(w(item) / total)``, so the
        final beam scores are ``log p(item | user) - strength * log p_train(item)`` up to a per-row constant
        (logit adjustment against the popularity prior), and the beam sees the adjustment at every depth
        instead of pruning low-prior prefixes before it applies. ``out[d]`` scores the nodes at depth ``d + 1``.
        """
        weights = torch.as_tensor(np.asarray(item_weights, dtype=np.float64))
        if weights.shape != (self.num_items,) or not bool((weights > 0).all()):
            raise ValueError(f"item_weights must be [{self.num_items}] positive values, got shape {tuple(weights.shape)}")
        log_w = []
        for d in range(self.code_len + 1):
            node_w = torch.zeros(self.num_nodes[d], dtype=torch.float64).index_add_(0, self.item_nodes[d], weights)
            log_w.append(node_w.log())
        return [(-strength * (log_w[d] - log_w[d - 1][self.node_parents(d)])).float()
                for d in range(1, self.code_len + 1)]

    def to(self, device: torch.device | str) -> ItemTrie:
        """This trie with its tensors on ``device`` (copies are cached, the trie itself is never mutated)."""
        device = torch.device(device)
        if self.leaf_item.device == device:
            return self
        copies = self.__dict__.setdefault("_copies", {})
        if device not in copies:
            twin = object.__new__(ItemTrie)
            twin.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_copies"})
            for name in ("offsets", "child_tokens", "edge_keys", "leaf_count"):
                setattr(twin, name, [t.to(device) for t in getattr(self, name)])
            twin.leaf_item, twin.item_nodes = self.leaf_item.to(device), self.item_nodes.to(device)
            twin.last_tokens = self.last_tokens.to(device)
            copies[device] = twin
        return copies[device]

    def nbytes(self) -> int:
        """Bytes held by the trie's tensors (proportional to the number of edges)."""
        tensors = [*self.offsets, *self.child_tokens, *self.edge_keys, *self.leaf_count, self.leaf_item, self.item_nodes,
                   self.last_tokens]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def __repr__(self) -> str:
        return f"ItemTrie(items={self.num_items}, code_len={self.code_len}, nodes={self.num_nodes})"


def _name(item_ids: Sequence[str] | None, row: int) -> str:
    return f"{item_ids[row]!r} (row {row})" if item_ids is not None else f"row {row}"
