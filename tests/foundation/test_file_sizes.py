"""Small files with one job: a Python file over 400 lines says why in its module docstring."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("alignrec", "recdata", "tokenization", "sft_tasks", "trainer", "inference", "scripts", "tests")
LIMIT = 400


def test_every_long_file_gives_its_reason():
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if text.count("\n") > LIMIT:
                doc = ast.get_docstring(ast.parse(text)) or ""
                if "Over 400 lines because" not in doc:
                    unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, f"split these or say why in the docstring ('Over 400 lines because ...'): {unexplained}"
