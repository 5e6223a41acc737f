"""Behaviour vectors of items without training, imputed from their content (the cold-item protocol only).

Why: a SASRec item table gives an item with no training interaction the row it was initialised with (under the
protocol its softmax column is masked, so nothing moves it). Fused into the tokenizer's input, that row is noise:
the item's cold-start code and the start of its model rows would be half random (measured on the ML-100K cold
split: across item pairs, text similarity and CF similarity correlate 0.19 for warm items, 0.00 for cold ones).
A new item's behaviour vector is unknown; the best linear guess from what is known about it is a ridge map from
its content parts to the behaviour part, fitted on the warm items (attribute-to-feature mapping, Gantner et al.,
ICDM 2010), its penalty chosen by leave-one-out (``recdata.ridge_fill``, shared with the trained rows'
fill, ``trainer.cold_rows``).

Only parts learned from interactions are imputed (``BEHAVIOUR_PARTS``); content parts (text, LEARN's text tower,
user files, knowledge) are the predictors. Runs outside the protocol never come here, so their vectors are
exactly as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from recdata.item_vectors import ItemEmbeddings
from recdata.ridge_fill import ridge_fill
from tokenization.embeddings.fusion import l2_normalize

logger = logging.getLogger(__name__)

__all__ = ["BEHAVIOUR_PARTS", "IMPUTED_KEY", "impute_untrained"]

BEHAVIOUR_PARTS = ("cf",)  # fusion parts learned from interactions only: meaningless for an item without any
IMPUTED_KEY = "imputed"  # the part's meta: {"items": n, "from": [parts], "alpha": a, "warm_r2": r2}


def impute_untrained(parts: dict[str, ItemEmbeddings], untrained: Sequence[str]) -> dict[str, ItemEmbeddings]:
    """``parts`` with the behaviour parts' rows of ``untrained`` items replaced by a ridge map from the content
    parts (each L2-normalised, concatenated), fitted on every other item; the other rows are untouched.

    Returns ``parts`` unchanged when nothing is untrained, no behaviour part is present, or no content part is
    there to predict from (logged). Each part keeps its own item order."""
    behaviour = [name for name in parts if name in BEHAVIOUR_PARTS]
    content = [name for name in parts if name not in BEHAVIOUR_PARTS]
    if not untrained or not behaviour:
        return parts
    if not content:
        logger.warning("%d item(s) have no training interaction but no content part is fused to impute their "
                       "%s vectors from; they keep their untrained rows", len(untrained), "/".join(behaviour))
        return parts
    item_ids = parts[content[0]].item_ids
    cold = np.isin(np.asarray(item_ids, dtype=object), np.asarray(list(untrained), dtype=object))
    if cold.all():
        logger.warning("no item has a training interaction: nothing to fit the %s imputation on", "/".join(behaviour))
        return parts
    x = np.concatenate([l2_normalize(parts[name].reorder(item_ids, source=f"fusion part {name!r}").vectors)
                        for name in content], axis=1).astype(np.float64)
    out = dict(parts)
    for name in behaviour:
        part = parts[name].reorder(item_ids, source=f"fusion part {name!r}")
        y = l2_normalize(part.vectors).astype(np.float64)  # the scale fusion gives it
        filled, fit = ridge_fill(x, y, cold)
        vectors = part.vectors.copy()
        vectors[cold] = filled[cold].astype(vectors.dtype)
        record = {"items": fit["items"], "from": content, "alpha": fit["alpha"], "warm_r2": fit["warm_r2"]}
        logger.info("imputed the %s vectors of %d item(s) without training from %s (ridge alpha %g, warm R^2 %.3f)",
                    name, record["items"], "+".join(content), record["alpha"], record["warm_r2"])
        out[name] = ItemEmbeddings(item_ids, vectors, {**part.meta, IMPUTED_KEY: record})
    return out
