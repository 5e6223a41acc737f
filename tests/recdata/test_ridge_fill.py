"""recdata.ridge_fill: only the flagged rows change, to the ridge (penalty by leave-one-out) fitted on the others."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from recdata.ridge_fill import ALPHAS, ridge_fill


def test_fills_the_flagged_rows_with_the_ridge_of_the_others():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = (x @ rng.normal(size=(5, 3)) + 0.3 * rng.normal(size=(40, 3))).astype(np.float32)
    fill = np.zeros(40, dtype=bool)
    fill[[2, 7, 30]] = True
    out, record = ridge_fill(x, y, fill)
    assert out.dtype == np.float32 and np.array_equal(out[~fill], y[~fill])
    assert record["items"] == 3 and record["alpha"] in ALPHAS and 0.5 < record["warm_r2"] <= 1.0
    reference = Ridge(alpha=record["alpha"]).fit(x[~fill], y[~fill]).predict(x[fill])
    assert np.allclose(out[fill], reference, atol=1e-5)


def test_refuses_nothing_to_fit_on_and_misaligned_rows():
    x, y = np.ones((3, 2)), np.ones((3, 2))
    with pytest.raises(ValueError, match="none is left"):
        ridge_fill(x, y, np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="one x row"):
        ridge_fill(x, y[:2], np.zeros(3, dtype=bool))
    assert ridge_fill(x, y, np.zeros(3, dtype=bool))[1]["items"] == 0
