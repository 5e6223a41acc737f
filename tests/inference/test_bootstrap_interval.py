"""One row's bootstrap interval on a slice of users (the cold-slice tables) and its table cell."""

from __future__ import annotations

import numpy as np
import pytest

from inference.report_tables import estimate_cell
from inference.significance import bootstrap_interval, resample_means


def test_interval_is_the_percentile_of_the_shared_resampler():
    values = [1.0, 0.0, 0.5, 1.0, 0.0, 0.25]
    got = bootstrap_interval(values, resamples=500, seed=3)
    means = resample_means(np.array(values), 500, np.random.default_rng(3))
    assert got == {"n": 6, "mean": pytest.approx(2.75 / 6), "low": float(np.quantile(means, 0.025)),
                   "high": float(np.quantile(means, 0.975)), "confidence": 0.95, "resamples": 500}


def test_constant_and_empty_slices():
    assert {k: bootstrap_interval([0.0] * 4)[k] for k in ("n", "mean", "low", "high")} == \
        {"n": 4, "mean": 0.0, "low": 0.0, "high": 0.0}
    empty = bootstrap_interval([])
    assert (empty["n"], empty["mean"], empty["low"], empty["high"]) == (0, None, None, None)
    assert estimate_cell(empty) == "-" and estimate_cell(None) == "-"
    assert estimate_cell({"mean": 0.075, "low": 0.07123, "high": 0.079}) == "0.0750 [0.0712, 0.0790]"
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        bootstrap_interval([1.0], confidence=1.0)
