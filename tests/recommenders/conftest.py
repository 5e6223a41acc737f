"""A tiny two-scenario split (lab / safety items of the shared tiny catalogue) and knowledge vectors for it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY_ITEMS, TINY_SEQUENCES

SCEN = {"i1": "lab", "i2": "safety", "i3": "safety", "i4": "lab", "i5": "lab", "i6": "safety", "i7": "safety",
        "i8": "lab"}


@pytest.fixture
def scenario_split():
    from recdata import RecDataset, leave_one_out_split

    seqs = [{**s, "scenarios": [SCEN[i] for i in s["item_ids"]]} for s in TINY_SEQUENCES]
    return leave_one_out_split(RecDataset.from_records(TINY_ITEMS, seqs, name="tiny").validate(), max_history=20)


@pytest.fixture
def knowledge():
    """``(scenario (ids, [2, 6]), user (ids, [5, 5]))`` random knowledge vectors, distinct per row."""
    rng = np.random.default_rng(0)
    users = [s["user_id"] for s in TINY_SEQUENCES]
    return ((["lab", "safety"], rng.normal(size=(2, 6)).astype(np.float32)),
            (users, rng.normal(size=(len(users), 5)).astype(np.float32)))
