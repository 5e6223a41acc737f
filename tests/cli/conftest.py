"""Fixtures for the CLI tests: one shared workspace of tiny artefacts, built once per session."""

from __future__ import annotations

import pytest

from tests.cli.bad_inputs import Workspace, build_workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    """Source, split, vectors, tokenizer and vocab export (read-only: cases copy what they change)."""
    import torch

    torch.set_num_threads(1)
    return build_workspace(tmp_path_factory.mktemp("cli"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Caches (embeddings, file hashes) go to a per-test home, never the user's."""
    monkeypatch.setenv("ALIGNREC_HOME", str(tmp_path / "home"))
