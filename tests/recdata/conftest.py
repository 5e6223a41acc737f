"""Fixtures for the data-layer tests.

pytest puts ``tests/`` on ``sys.path`` (rootdir conftest), where ``tests/recdata`` would shadow the real
``recdata`` package as a namespace package; the repository root goes first so the real one wins.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

from tests.recdata.recdata_sources import (  # noqa: E402
    write_amazon,
    write_lcrec,
    write_movielens,
    write_recbole,
    write_tabular,
)


@pytest.fixture
def tiny_sources(tmp_path):
    """{format: folder} with the same tiny data in every layout."""
    return {
        "lcrec_json": write_lcrec(tmp_path / "lcrec"),
        "recbole": write_recbole(tmp_path / "recbole"),
        "movielens": write_movielens(tmp_path / "ml"),
        "amazon_raw": write_amazon(tmp_path / "amazon"),
        "tabular": write_tabular(tmp_path / "tab"),
    }
