"""``sample_examples``: a seeded, order-keeping sample of evaluation rows (not the first n)."""

from __future__ import annotations

import datasets

from recdata.evaluation import sample_examples


def test_seeded_sample_keeps_order_and_is_reproducible():
    rows = datasets.Dataset.from_dict({"user_id": [str(i) for i in range(50)]})
    sample = sample_examples(rows, 10, seed=0)
    users = [int(u) for u in sample["user_id"]]
    assert len(users) == 10 == len(set(users)) and users == sorted(users)
    assert users != list(range(10))  # a sample, not the first rows
    assert users == [int(u) for u in sample_examples(rows, 10, seed=0)["user_id"]]
    assert users != [int(u) for u in sample_examples(rows, 10, seed=1)["user_id"]]
    assert sample_examples(rows, 0) is rows and sample_examples(rows, 50) is rows
