"""Fixtures for the data-layer tests: the same tiny data written in every supported layout."""

from __future__ import annotations

import pytest

from tests.recdata.recdata_sources import (
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
