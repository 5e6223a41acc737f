"""Slow: `alignrec tokenize` on amazon18-scientific with the real sentence encoder and SmolLM2 alignment targets.

The "done" criteria of the tokenizer: 0 collisions, level-1 usage >= 90%, exact reload (tables and hash).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignrec.cli import main
from tests.conftest import shared_dataset_dir
from tokenization import ItemTokenizer


@pytest.mark.slow
def test_scientific_tokenizer_meets_done_criteria(tmp_path):
    from recdata.paths import default_llm_dir

    data = shared_dataset_dir("amazon18-scientific")
    if not default_llm_dir().is_dir():
        pytest.skip(f"{default_llm_dir()} missing (run make setup)")
    split_dir, tok_dir = tmp_path / "split", tmp_path / "tok"
    assert main(["data", "prepare", "--path", str(data), "--output_dir", str(split_dir)]) == 0
    assert main(["tokenize", "--split_dir", str(split_dir), "--output_dir", str(tok_dir), "--rq_num_threads", "1",
                 "--text_max_length", "64"]) == 0  # 64 tokens: 4x faster text encoding on CPU
    report = json.loads((tok_dir / "report.json").read_text())
    assert report["collisions_after"] == 0
    assert report["levels"][0]["usage_pct"] >= 90.0
    tok = ItemTokenizer.from_pretrained(tok_dir)
    again = ItemTokenizer.from_pretrained(tok_dir)
    assert tok.content_hash == again.content_hash == report["content_hash"]
    np.testing.assert_array_equal(tok.codes, again.codes)
    assert len({tuple(r) for r in tok.codes.tolist()}) == len(tok) == report["num_items"]
    assert tok.code_token_embeddings() is not None
