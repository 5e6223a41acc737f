"""Fixtures for the alignment-task tests: a hand-made ItemTokenizer over the tiny catalogue, synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sft_tasks.sft_helpers import TINY_CODES, synthetic_split


@pytest.fixture
def tiny_item_tokenizer():
    from tokenization import ItemTokenizer

    ids = list(TINY_CODES)
    return ItemTokenizer.from_codes(ids, np.array([TINY_CODES[i] for i in ids]), [3, 2, 2])


@pytest.fixture
def synthetic():
    return synthetic_split()
