"""``alignrec run`` with ``tokenizer.item_id_level`` and cold items, end to end on tiny fixtures (train -> export)."""

from __future__ import annotations

import json

import numpy as np
import yaml

from alignrec.cli import main as alignrec_main
from tests.pipeline.test_run_end_to_end import NUM_ITEMS, NUM_USERS, tiny_run_config


def test_run_with_an_item_id_level_and_cold_items(tmp_path, tiny_chat_tokenizer):
    from tokenization import ItemTokenizer

    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["data"]["cold_item_fraction"] = 0.2
    config["tokenizer"].update(num_levels=1, codebook_size=4, item_id_level=True)
    config["evaluate"]["exclude_history"] = True
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path)]) == 0
    run_dir = tmp_path / "runs" / "tiny"

    tok = ItemTokenizer.from_pretrained(run_dir / "tokenizer" / "item_tokenizer")
    cold = json.loads((run_dir / "data" / "split" / "stats.json").read_text())["split"]["items_without_training"]
    assert cold >= 5 and tok.codebook_sizes == [4, NUM_ITEMS] and tok.meta["item_id_level"]
    np.testing.assert_array_equal(np.sort(tok.codes[:, 1]), np.arange(NUM_ITEMS))  # one id token per item
    assert tok.codes[-cold:, 1].min() == NUM_ITEMS - cold  # cold items extend the id level after the warm ones
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]["alignrec"]
    assert metrics["n_examples"] == NUM_USERS and metrics["invalid_rate"] == 0.0
    from inference.cache import CacheReader
    from tokenization.vocab_export import validate_vocab

    with CacheReader(run_dir / "cache" / "store") as reader:  # every user gets k real catalogue items
        assert all(len(reader.get(str(user)).items) == 5 for user in range(NUM_USERS))
    validate_vocab(run_dir / "export" / "vocab", expected_item_ids=tok.item_ids)
    tokens = json.loads((run_dir / "export" / "vocab" / "tokens.json").read_text())
    assert len(tokens) == 4 + NUM_ITEMS and "<b_23>" in tokens
