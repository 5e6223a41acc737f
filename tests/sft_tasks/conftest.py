"""Fixtures for the alignment-task tests: a hand-made ItemTokenizer over the tiny catalogue, synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# pytest puts tests/ on sys.path, where tests/sft_tasks and tests/tokenization would shadow the real packages
# as namespace packages; the repo root must come first (pyproject `pythonpath = ["."]` would make this moot).
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)
for _name in ("sft_tasks", "tokenization"):
    if _name in sys.modules and getattr(sys.modules[_name], "__file__", None) is None:
        del sys.modules[_name]

from sft_helpers import TINY_CODES, synthetic_split  # noqa: E402


@pytest.fixture
def tiny_item_tokenizer():
    from tokenization import ItemTokenizer

    ids = list(TINY_CODES)
    return ItemTokenizer.from_codes(ids, np.array([TINY_CODES[i] for i in ids]), [3, 2, 2])


@pytest.fixture
def synthetic():
    return synthetic_split()
