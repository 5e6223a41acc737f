"""Next-item softmax losses whose memory does not grow with the catalogue: one implementation, used by SASRec
(``sasrec_loss``) and the LLM's flat item head (``trainer.item_head``, ``item_head_loss``).

A full softmax over N items keeps ``[positions, N]`` logits, their softmax and its gradient: at 1M items and a few
thousand supervised positions per batch that is tens of GB. Three losses, picked by ``resolve_loss``:

- ``full``: the logits matrix itself (fastest while it fits).
- ``chunked``: the same loss and gradient, exactly, ``chunk`` items at a time (``linear_logsumexp``,
  ``column_logsumexp``): the log-partition is accumulated chunk by chunk with ``logaddexp``, and the backward pass
  recomputes each chunk's logits instead of keeping them, so memory is ``[positions, chunk]`` on any catalogue
  (``linear_logsumexp`` also tiles the positions, ``POSITION_CHUNK`` at a time: the LLM's chunked causal-LM loss,
  ``trainer.lm_loss``, runs it over the whole vocabulary at every supervised position).
  Compute is about twice full's (the logits are built twice); the choice for mid-size catalogues when memory, not
  time, binds. ``linear_logsumexp`` is also decoding's normaliser (``inference.beam_search``): one definition of
  the exact log-partition of a linear head. Its forward computes each tile into one reused buffer, bounded by
  ``max_elements`` logits too (cache-sized on CPU), and reduces it in place while it is in cache; without a gradient
  only that forward runs, and ``tile_dtype`` (the model's dtype) reproduces the head's own rounded logits.
- ``sampled``: sampled softmax with the logQ correction (Bengio & Senecal 2008, Jean et al. 2015, Yi et al. 2019).
  Per batch, S negatives shared by every position are drawn with replacement from a proposal q
  (``popularity_proposal``: (training count + 1)^alpha, alpha 0 = uniform; ``NegativeSampler``, seeded), and each
  position's loss is the cross-entropy of ``[s_y, s_j1 - log(S q_j1), ..., s_jS - log(S q_jS)]`` with the target
  ``y`` first and a draw equal to ``y`` (an accidental hit) masked out. Why the correction: the sum of
  ``exp(s_j - log(S q_j))`` over the non-target draws is an unbiased estimate of ``sum_{i != y} exp(s_i)``, so the
  loss estimates full CE with the target's own term exact; without it the negatives are weighted by how often q
  draws them and the model learns ``s_i + log q_i`` (popular items pushed down too hard). The loss is consistent,
  not unbiased (its log adds an O(1/S) bias). Identity the tests check: with the draws = every item once and
  ``S q = 1`` (uniform, S = N) it equals full CE exactly.

``resolve_loss("auto", N)``: ``full`` below ``AUTO_SAMPLED_MIN_ITEMS`` (100,000) items, ``sampled`` from there on.

``masked [N]`` (``alignrec.recommenders.softmax_mask``, the cold-item protocol) leaves items out of every kind alike:
full and chunked give them a -inf logit (a -inf bias, tiles included), sampled sets a masked draw's corrected logit
to -inf (like an accidental hit, so it adds exactly 0 and the estimate stays unbiased for the unmasked partition); a
row whose target is masked keeps its target. None = the unmasked code path, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from alignrec.recommenders.softmax_mask import mask_bias, masked_cross_entropy, with_target

__all__ = ["AUTO_SAMPLED_MIN_ITEMS", "CPU_TILE_ELEMENTS", "CPU_TILE_ROWS", "DEFAULT_CHUNK", "DEVICE_TILE_ELEMENTS",
           "FOLD_TILES", "LOSSES", "POSITION_CHUNK", "NegativeSampler", "column_logsumexp", "column_softmax_loss",
           "linear_logsumexp", "linear_softmax_loss", "popularity_proposal", "resolve_loss", "sampled_softmax_loss"]

LOSSES = ("auto", "full", "chunked", "sampled")
AUTO_SAMPLED_MIN_ITEMS = 100_000  # auto: full softmax below this many items, sampled softmax from here on
DEFAULT_CHUNK = 8192  # items per chunk of the chunked loss: memory [positions, 8192] floats
POSITION_CHUNK = 4096  # positions per tile of linear_logsumexp: memory [4096, chunk] floats however many positions
CPU_TILE_ELEMENTS = 1 << 19  # logits per forward tile of linear_logsumexp on CPU: 2 MB of float32, kept in cache
CPU_TILE_ROWS = 256  # positions per CPU forward tile: a tile spans >= 2,048 columns, enough for an efficient GEMM
DEVICE_TILE_ELEMENTS = 1 << 26  # on an accelerator: few, large tiles (kernel launches, not cache, bind there)
FOLD_TILES = 1024  # per-tile partial logsumexps kept per row before they are summed: [rows, 1024] floats at most


def resolve_loss(kind: str, num_items: int, sampled_min_items: int = AUTO_SAMPLED_MIN_ITEMS) -> str:
    """The loss actually used: ``auto`` -> ``full`` below ``sampled_min_items`` items, else ``sampled``."""
    if kind not in LOSSES:
        raise ValueError(f"loss {kind!r} is not one of {list(LOSSES)}")
    if num_items < 1:
        raise ValueError(f"a softmax over the catalogue needs >= 1 item, got {num_items}")
    if kind != "auto":
        return kind
    return "full" if num_items < sampled_min_items else "sampled"


def popularity_proposal(counts: Sequence[int] | torch.Tensor, alpha: float) -> torch.Tensor:
    """Proposal ``q [N]`` (float64, sums to 1) proportional to ``(count + 1) ** alpha``; alpha 0 = uniform.

    The +1 keeps every item drawable: the estimate of the partition function is unbiased only where q > 0.
    """
    if alpha < 0 or not math.isfinite(alpha):
        raise ValueError(f"the proposal's popularity exponent alpha must be a finite value >= 0, got {alpha}")
    c = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if c.numel() == 0 or bool((c < 0).any()):
        raise ValueError("popularity_proposal needs one count >= 0 per catalogue item")
    weights = (c + 1.0) ** alpha
    return weights / weights.sum()


class NegativeSampler:
    """Draws the batch's shared negatives from a proposal ``q [N]``, with replacement, from its own seeded generator.

    ``sample`` returns ``(negatives [S] int64, log_expected [S] float32)`` where ``log_expected = log(S q_j)``
    (the expected count of item j among the S draws: the logQ correction).
    """

    def __init__(self, proposal: torch.Tensor, num_negatives: int, seed: int) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        q = torch.as_tensor(proposal, dtype=torch.float64).flatten().cpu()
        if q.numel() == 0 or not bool(torch.isfinite(q).all()) or bool((q <= 0).any()):
            raise ValueError("the negative proposal needs a finite probability > 0 for every item "
                             "(build it with popularity_proposal)")
        q = q / q.sum()
        self.num_items, self.num_negatives = q.numel(), int(num_negatives)
        self.uniform = bool((q == q[0]).all())
        self.cdf = q.cumsum(0)  # [N] for inverse-CDF draws in O(S log N)
        self.log_q = q.log()  # [N]
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.num_negatives
        if self.uniform:
            negatives = torch.randint(0, self.num_items, (size,), generator=self.generator)
        else:
            u = torch.rand(size, generator=self.generator, dtype=torch.float64) * self.cdf[-1]
            negatives = torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.num_items - 1)
        log_expected = (math.log(size) + self.log_q[negatives]).float()
        return negatives.to(device), log_expected.to(device)


def sampled_softmax_loss(target_logits: torch.Tensor, negative_logits: torch.Tensor, targets: torch.Tensor,
                         negatives: torch.Tensor, log_expected: torch.Tensor,
                         masked: torch.Tensor | None = None) -> torch.Tensor:
    """Mean logQ-corrected sampled softmax loss (see the module docstring).

    ``target_logits [P]``, ``negative_logits [P, S]`` (row p scored against ``negatives [S]``), ``targets [P]`` item
    indices (a negative equal to its row's target is masked), ``log_expected [S] = log(S q_j)``; ``masked [N]``: items
    that are never negatives (a draw of one adds exactly 0).
    """
    dtype = torch.promote_types(_acc(target_logits), negative_logits.dtype)
    corrected = negative_logits.to(dtype) - log_expected.to(dtype).unsqueeze(0)  # [P, S]
    corrected = corrected.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), -math.inf)  # accidental hits
    if masked is not None:  # left-out items: no row's negative (the target, first, is always in)
        corrected = corrected.masked_fill(masked.to(negatives.device)[negatives].unsqueeze(0), -math.inf)
    logits = torch.cat([target_logits.to(dtype).unsqueeze(1), corrected], dim=1)  # [P, 1 + S], target first
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


# ---- chunked exact log-partition --------------------------------------------------------------------------------
def _tiled_logsumexp(hidden: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None,
                     columns: torch.Tensor | None, chunk: int, tile_dtype: torch.dtype | None,
                     max_elements: int | None) -> torch.Tensor:
    """``[P]`` ``logsumexp(hidden @ table[columns].T + bias, 1)`` in ``_acc(hidden)``, no autograd: the forward of
    ``linear_logsumexp`` (see there for the tile bounds). Each tile's logits are computed in ``tile_dtype`` into one
    reused buffer and reduced in place to one partial logsumexp per row while in cache; the partials are summed by
    ``torch.logsumexp`` (one rounding, not one per tile; an infinite logit gives what it gives)."""
    acc = _acc(hidden)
    tile_dtype = acc if tile_dtype is None else tile_dtype
    num_rows, width = hidden.shape[0], table.shape[0] if columns is None else columns.shape[0]
    cpu = hidden.device.type == "cpu"
    budget = max_elements or (CPU_TILE_ELEMENTS if cpu else DEVICE_TILE_ELEMENTS)
    row_block = max(1, min(num_rows, POSITION_CHUNK, CPU_TILE_ROWS if cpu else num_rows, budget))
    col_block = max(1, min(width, chunk, budget // row_block))
    buffer = torch.empty(row_block * col_block, dtype=tile_dtype, device=hidden.device)  # one tile, reused
    widened = None if tile_dtype == acc else torch.empty(row_block * col_block, dtype=acc, device=hidden.device)
    lse = torch.full((num_rows,), -math.inf, dtype=acc, device=hidden.device)  # [P]
    for rows in _spans(num_rows, row_block):
        h = hidden[rows].to(tile_dtype)  # [r, d]
        parts = [lse[rows]]  # [r] each: one partial logsumexp per tile, folded every FOLD_TILES tiles
        for cols in _spans(width, col_block):
            w = (table[cols] if columns is None else table[columns[cols]]).to(tile_dtype).T  # [d, c]
            tile = buffer[:h.shape[0] * w.shape[1]].view(h.shape[0], w.shape[1])  # [r, c]: the head's logits
            if bias is None:
                torch.mm(h, w, out=tile)
            else:
                torch.addmm(bias[cols].to(tile_dtype), h, w, out=tile)
            if widened is not None:  # reduced in float32 or wider, whatever the tile's dtype
                tile = widened[:tile.numel()].view(tile.shape).copy_(tile)
            peak = tile.amax(1, keepdim=True)  # [r, 1]
            peak.masked_fill_(peak.isinf(), 0.0)  # as torch.logsumexp: a row with an infinite peak stays infinite
            parts.append(tile.sub_(peak).exp_().sum(1).log_().add_(peak.squeeze(1)))
            if len(parts) == FOLD_TILES:
                parts = [torch.stack(parts, 1).logsumexp(1)]
        lse[rows] = torch.stack(parts, 1).logsumexp(1)
    return lse


class _LinearLogSumExp(torch.autograd.Function):
    """``logsumexp(hidden @ table[columns].T + bias, 1)``: the forward is ``_tiled_logsumexp`` (in ``_acc(hidden)``,
    keeping only ``[P]``); the backward recomputes tiles of ``POSITION_CHUNK`` rows x ``chunk`` columns (nothing
    ``[P, N]`` kept). ``columns`` None = every row of ``table``."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None,
                columns: torch.Tensor | None, chunk: int, max_elements: int | None) -> torch.Tensor:
        lse = _tiled_logsumexp(hidden, table, bias, columns, chunk, None, max_elements)
        ctx.save_for_backward(hidden, table, bias, columns, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, table, bias, columns, lse = ctx.saved_tensors
        acc = lse.dtype
        width = table.shape[0] if columns is None else columns.shape[0]
        want_t, want_b = ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device)  # [P, d]
        grad_t = torch.zeros(table.shape, dtype=acc, device=table.device) if want_t else None  # [V, d]
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if want_b else None  # [N]
        for rows in _spans(hidden.shape[0], POSITION_CHUNK):
            h = hidden[rows].to(acc)
            for cols in _spans(width, ctx.chunk):
                # [r, c]: softmax x upstream grad
                p = torch.exp(_linear_tile(h, table, bias, columns, cols) - lse[rows].unsqueeze(1))
                p = p * grad[rows].unsqueeze(1)
                ids = cols if columns is None else columns[cols]
                grad_h[rows] += p @ table[ids].to(acc)
                if grad_t is not None:
                    if columns is None:
                        grad_t[cols] += p.T @ h
                    else:
                        grad_t.index_add_(0, ids, p.T @ h)
                if grad_b is not None:
                    grad_b[cols] += p.sum(0)
        return (grad_h.to(hidden.dtype), None if grad_t is None else grad_t.to(table.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None)


def _spans(size: int, step: int) -> list[slice]:
    return [slice(start, start + step) for start in range(0, size, step)]


def _linear_tile(h: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None, columns: torch.Tensor | None,
                 cols: slice) -> torch.Tensor:
    """``[r, c]`` logits of states ``h`` against the columns ``cols`` (rows ``columns[cols]`` of ``table``)."""
    rows = table[cols] if columns is None else table[columns[cols]]  # [c, d]
    z = h @ rows.to(h.dtype).T
    return z if bias is None else z + bias[cols].to(z.dtype).unsqueeze(0)


class _ColumnLogSumExp(torch.autograd.Function):
    """``logsumexp(logits[rows][:, columns] + bias, 1)`` in column chunks, never gathering ``[M, N]``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, bias: torch.Tensor | None,
                chunk: int) -> torch.Tensor:
        lse = torch.full((rows.shape[0],), -math.inf, dtype=_acc(logits), device=logits.device)  # [M]
        for start in range(0, columns.shape[0], chunk):
            lse = torch.logaddexp(lse, _column_chunk(logits, rows, columns, bias, start, chunk).logsumexp(1))
        ctx.save_for_backward(logits, rows, columns, bias, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, rows, columns, bias, lse = ctx.saved_tensors
        grad_logits = torch.zeros_like(logits)  # [R, V], like the backward of any indexing of logits
        for start in range(0, columns.shape[0], ctx.chunk):
            z = _column_chunk(logits, rows, columns, bias, start, ctx.chunk)  # [M, c]
            p = torch.exp(z - lse.unsqueeze(1)) * grad.unsqueeze(1)
            index = (rows.unsqueeze(1), columns[start:start + ctx.chunk].unsqueeze(0))
            grad_logits.index_put_(index, p.to(grad_logits.dtype), accumulate=True)
        return grad_logits, None, None, None, None


def _column_chunk(logits, rows, columns, bias, start: int, chunk: int) -> torch.Tensor:
    cols = columns[start:start + chunk]
    z = logits[rows.unsqueeze(1), cols.unsqueeze(0)].to(_acc(logits))  # [M, c], gathered directly (no [M, V] copy)
    return z if bias is None else z + bias[start:start + chunk].to(z.dtype).unsqueeze(0)


def _acc(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: float32 for half precision and float32, float64 kept."""
    return torch.promote_types(x.dtype, torch.float32)


def linear_logsumexp(hidden: torch.Tensor, table: torch.Tensor, chunk: int = DEFAULT_CHUNK,
                     bias: torch.Tensor | None = None, columns: torch.Tensor | None = None, *,
                     tile_dtype: torch.dtype | None = None, max_elements: int | None = None) -> torch.Tensor:
    """``[P]`` log-partition of ``hidden [P, d] @ table [N, d].T (+ bias [N])``, exact, in float32 or wider
    (``hidden``'s dtype promoted to float32), never holding ``[P, N]``. ``columns [N]``: score only those rows of a
    larger ``table [V, d]`` (``bias`` then per column), without gathering them; the gradient reaches exactly those
    rows. The one definition, for training losses and decoding's normaliser alike.

    The forward's tiles have at most ``chunk`` columns, ``POSITION_CHUNK`` rows (``CPU_TILE_ROWS`` on CPU) and
    ``max_elements`` logits (default ``CPU_TILE_ELEMENTS`` on CPU, ``DEVICE_TILE_ELEMENTS`` elsewhere). When no
    gradient is needed (grad mode off, or none of ``hidden``, ``table``, ``bias`` requires one) only that forward
    runs; otherwise the backward recomputes tiles of ``POSITION_CHUNK`` x ``chunk``. ``tile_dtype``: the dtype each
    tile's logits are computed in before the float32-or-wider reduction; None: the reduction's own (exact); the
    model's dtype reproduces its head's rounded logits, as decoding's ``log_softmax`` needs (no gradient only).
    """
    chunk = _check_chunk(chunk)
    if max_elements is not None and max_elements < 1:
        raise ValueError(f"max_elements must be >= 1 logit per tile (or None for the default), got {max_elements}")
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, table, bias))
    if not needs_grad:
        return _tiled_logsumexp(hidden, table, bias, columns, chunk, tile_dtype, max_elements)
    if tile_dtype not in (None, _acc(hidden)):
        raise ValueError(f"tile_dtype={tile_dtype} rounds the logits and has no gradient: call linear_logsumexp "
                         "under torch.no_grad() (or inference_mode) with it, or leave it None")
    return _LinearLogSumExp.apply(hidden, table, bias, columns, chunk, max_elements)


def column_logsumexp(logits: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor,
                     bias: torch.Tensor | None = None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``[M]`` log-partition of ``logits [R, V]`` rows ``rows [M]`` restricted to ``columns [N]`` (+ ``bias [N]``),
    exact (float32 or wider); the gradient reaches exactly those entries of ``logits``."""
    return _ColumnLogSumExp.apply(logits, rows, columns, bias, _check_chunk(chunk))


def _check_chunk(chunk: int) -> int:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 item, got {chunk}")
    return int(chunk)


# ---- the one dispatch per logit layout -------------------------------------------------------------------------
def linear_softmax_loss(kind: str, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                        sampler: NegativeSampler | None = None, chunk: int = DEFAULT_CHUNK,
                        bias: torch.Tensor | None = None, columns: torch.Tensor | None = None,
                        masked: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-item CE of states ``hidden [P, d]`` over items ``table [N, d]`` (``targets [P]``: 0-based rows), by a
    resolved ``kind`` (full | chunked | sampled; sampled needs ``sampler``). ``bias [N]`` is added to item logits;
    ``columns [N]``: item ``i`` is row ``columns[i]`` of a larger ``table [V, d]`` (an LM head's item-id tokens);
    ``masked [N]``: items left out of the softmax (module docstring)."""
    def rows(items: torch.Tensor) -> torch.Tensor:  # [k, d] the items' rows
        return table[items if columns is None else columns[items]]

    def with_bias(z: torch.Tensor, items: torch.Tensor | None) -> torch.Tensor:
        if bias is None:
            return z
        b = bias if items is None else bias[items]
        return z + b.to(z.dtype)

    if kind == "full":
        items = table if columns is None else table[columns]
        logits = with_bias((hidden @ items.T).to(_acc(hidden)), None)  # [P, N]
        return F.cross_entropy(logits, targets) if masked is None else masked_cross_entropy(logits, targets, masked)
    target_logits = with_bias((hidden * rows(targets)).sum(-1), targets)  # [P]
    if kind == "chunked":
        if masked is None:
            lse = linear_logsumexp(hidden, table, chunk, bias=bias, columns=columns)
            return (lse - target_logits.to(lse.dtype)).mean()
        lse = linear_logsumexp(hidden, table, chunk, bias=mask_bias(masked, bias), columns=columns)
        target_logits = target_logits.to(lse.dtype)
        return (with_target(lse, target_logits, masked[targets]) - target_logits).mean()
    negatives, log_expected = _draw(kind, sampler, table.shape[0] if columns is None else columns.shape[0],
                                    hidden.device)
    negative_logits = with_bias(hidden @ rows(negatives).T, negatives.unsqueeze(0))  # [P, S]
    return sampled_softmax_loss(target_logits, negative_logits, targets, negatives, log_expected, masked)


def column_softmax_loss(kind: str, logits: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor,
                        targets: torch.Tensor, bias: torch.Tensor | None = None, sampler: NegativeSampler | None = None,
                        chunk: int = DEFAULT_CHUNK, masked: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE over items whose logits are columns of a larger matrix: rows ``rows [M]`` of ``logits [R, V]``,
    item ``i``'s logit in column ``columns[i]`` (+ ``bias[i]``), ``targets [M]`` item indices; by a resolved
    ``kind`` as ``linear_softmax_loss`` (``masked [N]`` too)."""
    acc = _acc(logits)
    if kind == "full":
        z = logits[rows][:, columns].to(acc)  # [M, N]
        z = z if bias is None else z + bias.to(acc)
        return F.cross_entropy(z, targets) if masked is None else masked_cross_entropy(z, targets, masked)
    target_logits = logits[rows, columns[targets]].to(acc)  # [M]
    if bias is not None:
        target_logits = target_logits + bias[targets].to(acc)
    if kind == "chunked":
        if masked is None:
            return (column_logsumexp(logits, rows, columns, bias, chunk) - target_logits).mean()
        lse = column_logsumexp(logits, rows, columns, mask_bias(masked, bias), chunk)
        return (with_target(lse, target_logits.to(lse.dtype), masked[targets]) - target_logits).mean()
    negatives, log_expected = _draw(kind, sampler, columns.shape[0], logits.device)
    negative_logits = logits[rows.unsqueeze(1), columns[negatives].unsqueeze(0)].to(acc)  # [M, S]
    if bias is not None:
        negative_logits = negative_logits + bias[negatives].to(acc).unsqueeze(0)
    return sampled_softmax_loss(target_logits, negative_logits, targets, negatives, log_expected, masked)


def _draw(kind: str, sampler: NegativeSampler | None, num_items: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    if kind != "sampled":
        raise ValueError(f"loss kind {kind!r} is not one of full, chunked, sampled (resolve 'auto' with resolve_loss)")
    if sampler is None:
        raise ValueError("the sampled loss needs a NegativeSampler (its proposal and seed)")
    if sampler.num_items != num_items:
        raise ValueError(f"the NegativeSampler covers {sampler.num_items} items, the catalogue has {num_items}")
    return sampler.sample(device)
