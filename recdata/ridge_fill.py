"""Rows nothing was learned for, filled by a ridge map from content fitted on the rows that were learned.

One definition for the two places an item without training needs a learned row: its behaviour vector in the
tokenizer's input (``tokenization.embeddings.cold_imputation``) and its trained model rows under the cold-item
protocol (``trainer.cold_rows``). Attribute-to-feature mapping (Gantner et al., ICDM 2010): the best linear guess
of an unknown learned row from what is known about the item, its penalty chosen by leave-one-out over the learned
rows (``RidgeCV``'s efficient generalised cross-validation), so no held-out target is read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALPHAS", "ridge_fill"]

ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


def ridge_fill(x: np.ndarray, y: np.ndarray, fill: np.ndarray) -> tuple[np.ndarray, dict]:
    """``y`` (a copy, its dtype) with the rows where ``fill`` is True replaced by ``ridge(x)``, the ridge fitted on
    ``(x[~fill], y[~fill])``; and ``{"items": filled rows, "alpha": chosen penalty, "warm_r2": fit R^2 on the
    learned rows}``. ``x [n, k]``, ``y [n, d]``, ``fill [n]`` bool with at least one False row."""
    from sklearn.linear_model import RidgeCV

    fill = np.asarray(fill, dtype=bool)
    if x.shape[0] != y.shape[0] or fill.shape != (x.shape[0],):
        raise ValueError(f"ridge_fill needs one x row, y row and fill flag per item: {x.shape}, {y.shape}, "
                         f"{fill.shape}")
    if fill.all():
        raise ValueError("ridge_fill: every row is to be filled, none is left to fit the map on")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ridge = RidgeCV(alphas=ALPHAS).fit(xs[~fill], ys[~fill])
    out = np.array(y, copy=True)
    if fill.any():
        out[fill] = ridge.predict(xs[fill]).astype(out.dtype)
    return out, {"items": int(fill.sum()), "alpha": float(ridge.alpha_),
                 "warm_r2": round(float(ridge.score(xs[~fill], ys[~fill])), 4)}
