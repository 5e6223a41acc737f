"""Exact scores for one beam-search decode step, computed without a ``[rows, vocab]`` logits tensor.

Why a module of its own: ``inference.beam_search`` is the search (argument checks, trie walk, KV cache, beam
bookkeeping); this is the arithmetic it runs at every step, each piece checked against a plain reference in
``tests/inference/test_beam_scale.py`` and none of it aware of tries or caches:

- the normaliser of ``log_softmax`` over the full vocabulary from the model's logits: ``row_logsumexp`` (chunked, no
  float32 copy). From the last hidden states and the output head the search calls the training loss's own
  ``alignrec.recommenders.sampled_softmax.linear_logsumexp`` (cache-sized tiles in the model's dtype, so the logits
  never exist whole: ~7.7 GB at 64 users x 30 beams and 1M item tokens): one definition of that log-partition;
- ``edge_logits``: each allowed child's logit from its gathered head row, ``O(edges x hidden)``;
- ``linear_output_head``, ``base_decoder`` and ``head_reproduces``: whether a model's head is a plain linear map
  (``trainer.lm_loss.output_head``) and its base decoder's final states through that map reproduce its logits, which
  is what lets decode steps run the decoder alone and skip the logits; a model that fails decodes from its logits,
  with a one-time warning. The states come from the decoder's ``last_hidden_state``, never from
  ``output_hidden_states``: in transformers 5 that flag installs output-capturing hooks on every submodule (closures
  over a ``ContextVar``), after which the model can no longer be pickled (e.g. handed to Ray actors);
- ``segmented_topk`` (one sort on a (row, value) key), ``contenders`` (edges that can still make a row's top k) and
  ``isin_sorted`` (a binary search for the exclusion and allowed-item masks);
- for ``decode_normaliser`` children (``inference.decode_normaliser``): ``children_log_softmax`` (each edge's logit
  minus the log-sum-exp over its beam's children, ``O(edges)``) and ``head_reproduces_once`` (the guard, run once
  per model: its ``[rows, vocab]`` forward must not be paid per batch).
"""

from __future__ import annotations

import logging
import weakref

import torch

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")
GUARD_ROWS = 4  # prompts on which the decoder and head's logits are compared with the model's, every call ...
GUARD_POSITIONS = 8  # ... over their last this many tokens (a short extra forward of each, no cache) ...
GUARD_TOKENS = 4096  # ... at this many tokens spread over the vocabulary
EDGE_BLOCK = 4096  # edges whose head rows are gathered at once: [4,096, hidden] floats, in cache


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


@torch.no_grad()
def edge_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, owner: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
    """``[edges]`` float32 logit of token ``tokens[e]`` at state ``hidden[owner[e]]``: the model's logit (its head's
    dot product accumulated in float32, rounded to the model's dtype) from the gathered head rows alone, in blocks of
    ``EDGE_BLOCK`` edges (small enough to stay in cache). Cost ``O(edges x h)``, whatever the vocabulary."""
    out = torch.empty(owner.shape[0], dtype=torch.float32, device=hidden.device)
    for e in range(0, owner.shape[0], EDGE_BLOCK):
        o, t = owner[e:e + EDGE_BLOCK], tokens[e:e + EDGE_BLOCK]
        z = hidden.index_select(0, o).float().mul_(weight.index_select(0, t).float()).sum(dim=-1)  # [block]
        if bias is not None:
            z += bias.index_select(0, t).float()
        out[e:e + EDGE_BLOCK] = z.to(hidden.dtype) if hidden.dtype != torch.float32 else z
    return out


def children_log_softmax(values: torch.Tensor, owner: torch.Tensor, num_owners: int) -> torch.Tensor:
    """``[edges]`` float32 ``log_softmax`` of ``values [edges]`` (logits) within each owner's edges: ``values[e]`` minus
    the log-sum-exp of the values sharing ``owner[e]`` (in ``[0, num_owners)``). Fed every trie child of every live
    beam, it is the log-prob under the trie-constrained model: ``O(edges)``, whatever the vocabulary."""
    values = values.float()
    peak = torch.full((num_owners,), NEG_INF, device=values.device).scatter_reduce(0, owner, values, "amax")
    peak.masked_fill_(~torch.isfinite(peak), 0.0)  # an owner without edges or with only -inf logits
    total = torch.zeros(num_owners, device=values.device).index_add_(0, owner, (values - peak[owner]).exp())
    return torch.where(values == NEG_INF, values, values - (peak + total.log())[owner])  # -inf stays -inf, no nan


def segmented_topk(values: torch.Tensor, segment: torch.Tensor, num_segments: int,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best ``values [n]`` (float32) of every segment: (positions ``[num_segments, k]``, found
    ``[num_segments, k]``).

    ``segment [n]`` (in ``[0, num_segments)``) names each value's segment; a segment with fewer than ``k`` values is
    padded with ``found=False`` slots (position clamped to a real one). Best first; equal values keep their input
    order (one stable sort on a key of segment, then value descending), so all memory is ``O(n + num_segments *
    k)``: no ``[segments, widest]`` padding, which is what a very unequal trie level would cost.
    """
    bits = (values.float() + 0.0).view(torch.int32).to(torch.int64)  # + 0.0: -0.0 becomes 0.0, they tie as floats
    ascending = torch.where(bits < 0, ~bits & 0xFFFFFFFF, bits | 0x80000000)  # float order as an unsigned 32-bit key
    order = torch.sort((segment << 32) | (0xFFFFFFFF - ascending), stable=True).indices  # [n] by segment, best first
    counts = torch.bincount(segment, minlength=num_segments)  # [segments]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(k, device=values.device)
    found = slot < counts.unsqueeze(1)  # [segments, k]
    pos = (starts.unsqueeze(1) + slot).clamp(max=max(values.numel() - 1, 0))
    return order[pos], found


def contenders(values: torch.Tensor, owner: torch.Tensor, row: torch.Tensor, batch: int, states: int,
               k: int) -> torch.Tensor | None:
    """Positions of the edges that can be among their row's ``k`` best, or None for all of them.

    ``owner [edges]`` is each edge's beam (``row * states + beam``). The ``k``-th best of a row's per-beam maxima is
    a bar that at least ``k`` of its edges reach, so no edge below it is among the ``k`` best; edges at or above it
    (ties included) keep their input order, so ``segmented_topk`` over them picks what it picks over all edges.
    """
    if states < k:
        return None
    peak = torch.full((batch * states,), NEG_INF, device=values.device).scatter_reduce(0, owner, values, "amax")
    bar = peak.view(batch, states).topk(k, dim=1).values[:, -1]  # [batch]
    return (values >= bar[row]).nonzero().squeeze(1)


def isin_sorted(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``torch.isin(query, keys)`` for sorted ``keys``: a binary search per query, no sort of ``query``."""
    pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    return keys[pos] == query


def linear_output_head(model: torch.nn.Module):
    """``trainer.lm_loss.output_head(model)`` (weight and bias of a plain linear output head), or None for a model
    whose head is something else (a logit transform, LoRA on the head, no head): those decode from the logits."""
    if getattr(model, "get_output_embeddings", None) is None or getattr(model, "config", None) is None:
        return None
    from trainer.lm_loss import output_head

    try:
        return output_head(model)
    except ValueError as err:
        _warn_once(type(model).__name__, f"decoding from the model's full logits: {err}")
        return None


def base_decoder(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module under ``model``'s output head whose ``last_hidden_state`` (after the final norm) the head reads
    (``trainer.lm_loss.decoder_module``, the one the chunked training loss reads too). None, with a one-time
    warning, for a model without one."""
    from trainer.lm_loss import decoder_module

    try:
        return decoder_module(model)
    except ValueError:
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        _warn_once(type(causal_lm).__name__, "decoding from the model's full logits: it has no base decoder "
                                             "(get_decoder) returning its last hidden states")
        return None


@torch.no_grad()
def head_reproduces(model: torch.nn.Module, decoder: torch.nn.Module, head, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, position_ids: torch.Tensor) -> bool:
    """Whether ``decoder``'s last hidden state through ``hidden @ weight.T + bias`` equals ``model``'s own logits:
    both run (no cache, no ``output_hidden_states``) on the last ``GUARD_POSITIONS`` tokens of the first
    ``GUARD_ROWS`` prompts, compared at ``GUARD_TOKENS`` tokens spread over the vocabulary (a cheap sample: a missing
    final norm, a logit transform, prompt tokens a wrapper adds, or another head shows on any of them). Checked on
    every call: the guard that lets decode steps run the decoder alone. A model that fails it decodes from its
    logits, with a warning."""
    window = (slice(0, GUARD_ROWS), slice(-GUARD_POSITIONS, None))
    inputs = {"input_ids": input_ids[window], "attention_mask": attention_mask[window],
              "position_ids": position_ids[window], "use_cache": False}
    logits = model(**inputs, logits_to_keep=1).logits[:, -1]  # [rows, vocab]
    try:
        hidden = decoder(**inputs).last_hidden_state[:, -1]  # [rows, hidden]
    except (AttributeError, TypeError) as err:  # a decoder that takes other arguments or returns no last state
        _warn_once(type(decoder).__name__, f"decoding from the model's full logits: its decoder failed: {err}")
        return False
    cols = torch.linspace(0, logits.shape[-1] - 1, min(GUARD_TOKENS, logits.shape[-1]),
                          device=logits.device).round().long().unique()  # [<= GUARD_TOKENS], first and last in
    expected = logits[:, cols].float()
    weight = head.weight[cols].to(hidden.dtype)
    bias = None if head.bias is None else head.bias[cols].to(hidden.dtype)
    ours = torch.nn.functional.linear(hidden, weight, bias).float()
    tolerance = 1e-4 if hidden.dtype == torch.float32 else 2e-2
    scale = expected.abs().max().clamp(min=1.0)
    ok = ours.shape == expected.shape and bool(((ours - expected).abs().max() <= tolerance * scale).item())
    if not ok:
        _warn_once(type(head.module).__name__, "decoding from the model's full logits: its decoder's last hidden "
                                               "states through its output head's weight and bias do not reproduce "
                                               "its logits")
    return ok


_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (decoder ref, head ref, verdict)


def head_reproduces_once(model: torch.nn.Module, decoder: torch.nn.Module, head, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor, position_ids: torch.Tensor) -> bool:
    """``head_reproduces``, run once per model (and per decoder and head module object) and remembered while the
    model lives: the guard's ``[rows, vocab]`` forward is ``O(vocab)``, which a per-user cost that must not grow with
    the catalogue cannot pay on every batch. Whether decoder and head give the logits is a property of the model's
    structure, not of its weights or prompts; a changed structure (another decoder or head module, a logit transform:
    ``linear_output_head`` refuses that on every call) is checked afresh."""
    seen = _VERDICTS.get(model)
    if seen is not None and seen[0]() is decoder and seen[1]() is head.module:
        return seen[2]
    verdict = head_reproduces(model, decoder, head, input_ids, attention_mask, position_ids)
    _VERDICTS[model] = (weakref.ref(decoder), weakref.ref(head.module), verdict)
    return verdict


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message)


