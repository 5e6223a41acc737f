"""The import contract (``[tool.importlinter]`` in pyproject.toml, see docs/architecture.md): it holds on the
repository, it catches an upward import even inside a function, and every old import path it lets through (the
deprecated aliases in its ``ignore_imports``) still works and warns.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("recdata", "tokenization", "sft_tasks", "trainer", "inference", "alignrec")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the dev extra's console script


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on ``root`` (pyproject.toml + the packages); no cache, so every run reads the files."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_repository_keeps_the_contract():
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """The packages and pyproject.toml copied, so a test can plant an import without touching the work tree."""
    root = tmp_path_factory.mktemp("contract")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


@pytest.mark.parametrize("planted, module, expected", [
    # a function-level upward import: the data layer reaching for inference
    ("\n\ndef _planted():\n    import inference  # noqa: F401\n", "recdata/split.py",
     "recdata.split -> inference"),
    # a function-level cycle between two modules of one package
    ("\n\ndef _planted():\n    from recdata import split  # noqa: F401\n", "recdata/io.py",
     "No cycles are allowed in recdata."),
])
def test_a_planted_violation_breaks_the_contract(repo_copy, planted, module, expected):
    path = repo_copy / module
    original = path.read_text()
    try:
        path.write_text(original + planted)
        out = lint_imports(repo_copy)
    finally:
        path.write_text(original)
    assert out.returncode == 1, out.stdout
    assert "1 broken" in out.stdout
    assert expected in out.stdout, out.stdout


# Old import paths kept one release (the shims the contract's ignore_imports names): they work and warn.
MOVED_MODULES = [
    ("recdata.hf_tokenizer", "alignrec.llm.hf_tokenizer", "load_hf_tokenizer"),
    ("recdata.llm_generation", "alignrec.llm.generation", "generate_cached"),
    ("trainer.ranking_validation", "inference.ranking_validation", "RankingValidationCallback"),
    ("inference.evaluate", "recdata.evaluation", "evaluate_recommender"),
    ("inference.popularity", "recdata.popularity", "train_popularity"),
    ("tokenization.embeddings.vectors", "recdata.item_vectors", "ItemEmbeddings"),
    ("tokenization.embeddings.user_provided", "recdata.item_vectors", "load_user_embeddings"),
]
MOVED_NAMES = [
    ("inference.cache.backends", "open_store", "inference.cache.reader"),
    ("tokenization.embeddings.text", "encode_llm", "alignrec.llm.text_encoders"),
    ("tokenization.embeddings.text", "mean_pool_hidden", "alignrec.llm.text_encoders"),
]


@pytest.mark.parametrize("old, new, name", MOVED_MODULES)
def test_a_moved_module_keeps_its_old_path_with_a_warning(old, new, name):
    sys.modules.pop(old, None)  # the alias warns when it is imported
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        alias = importlib.import_module(old)
    assert getattr(alias, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old, name, new", MOVED_NAMES)
def test_a_moved_name_keeps_its_old_path_with_a_warning(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
