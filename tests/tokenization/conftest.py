"""Make ``import tokenization`` find the package, not this ``tests/tokenization`` folder.

pytest (prepend import mode) puts ``tests/`` on ``sys.path``; without the repo root there too, the test
folder shadows the package as a namespace package. Remove once pyproject sets ``pythonpath = ["."]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_mod = sys.modules.get("tokenization")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["tokenization"]  # a namespace package picked up before this ran


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster single-threaded on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _root_conftest():
    """tests/conftest.py under its own name: ``import conftest`` resolves to this file inside this folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tests_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shared_dataset_dir = _root_conftest().shared_dataset_dir
