"""Which normaliser a beam step's log-prob uses: ``decode_normaliser`` (evaluate / cache build / recommend).

Why a module of its own, free of torch: the config dataclasses of three commands check the key and ``alignrec
--help`` must stay light; the beam search, the recommender and the records of a run resolve ``auto`` here, once.

- ``vocabulary``: each step's ``log_softmax`` over the full vocabulary, exact sequence log-probs. With an item-id
  level the vocabulary holds a token per item, so every beam pays ``O(items x hidden)`` per step.
- ``children``: each step normalised over the trie children of the beam's node (the log-prob under the
  trie-constrained model), the item head read at the leaf edges only: cost per user depends only on the live beams'
  children (``inference.beam_search``).
- ``auto`` (the default): ``children`` from ``AUTO_SAMPLED_MIN_ITEMS`` catalogue items on (the size at which the
  item softmaxes turn sampled too), else ``vocabulary``; every shipped config is far below, so it decodes exactly.
"""

from __future__ import annotations

__all__ = ["NORMALISERS", "NORMALISER_KEY", "describe_normaliser", "resolve_normaliser"]

NORMALISER_KEY = "decode_normaliser"  # the evaluate / cache build / recommend key
NORMALISERS = ("auto", "vocabulary", "children")


def _threshold() -> int:
    """The catalogue size from which ``auto`` picks ``children``: the item softmaxes' own threshold, read at call time
    (its module imports torch)."""
    from alignrec.recommenders import sampled_softmax

    return int(sampled_softmax.AUTO_SAMPLED_MIN_ITEMS)


def resolve_normaliser(mode: str, num_items: int) -> str:
    """``vocabulary`` or ``children`` for ``mode`` on a catalogue of ``num_items``; ``ValueError`` for another mode."""
    if mode not in NORMALISERS:
        raise ValueError(f"{NORMALISER_KEY} must be one of {list(NORMALISERS)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "children" if num_items >= _threshold() else "vocabulary"


def describe_normaliser(mode: str, num_items: int) -> str:
    """What a run records: the resolved mode and why, e.g. ``children (auto: 1,000,000 items >= 100,000)``."""
    resolved = resolve_normaliser(mode, num_items)
    if mode != "auto":
        return f"{resolved} (set)"
    return f"{resolved} (auto: {num_items:,} items {'>=' if resolved == 'children' else '<'} {_threshold():,})"
