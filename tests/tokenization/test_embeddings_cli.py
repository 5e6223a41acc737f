"""The ``embed`` and ``sasrec`` subcommands end to end on the tiny split (real parse_config path)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from alignrec.recommenders import SASRec
from tokenization.embeddings.cli import register


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args, rest = parser.parse_known_args(argv)
    return args.handler(args, rest)


def test_embed_and_sasrec_commands(tiny_split, tmp_path):
    tiny_split.save(tmp_path / "split")
    sasrec = ["--sasrec_dim", "16", "--sasrec_layers", "1", "--sasrec_epochs", "3", "--sasrec_patience", "2"]
    assert _main(["embed", "--split_dir", str(tmp_path / "split"), "--output_dir", str(tmp_path / "emb"),
                  "--source", "cf", "--cache_dir", str(tmp_path / "cache"), *sasrec]) == 0
    vectors = np.load(tmp_path / "emb" / "vectors.npy")
    assert vectors.shape == (8, 16)
    assert json.loads((tmp_path / "emb" / "item_ids.json").read_text()) == tiny_split.dataset.item_ids()
    resolved = json.loads((tmp_path / "emb" / "resolved_config.json").read_text())
    assert resolved["EmbeddingConfig"]["source"] == "cf" and resolved["EmbeddingConfig"]["sasrec_dim"] == 16

    assert _main(["sasrec", "--split_dir", str(tmp_path / "split"), "--output_dir", str(tmp_path / "sr"), *sasrec]) == 0
    results = json.loads((tmp_path / "sr" / "results.json").read_text())
    assert {"valid_recall@10", "test_ndcg@20", "epochs"} <= set(results)
    assert len((tmp_path / "sr" / "metrics.jsonl").read_text().splitlines()) == results["epochs"]
    model = SASRec.from_pretrained(tmp_path / "sr" / "model")
    np.testing.assert_array_equal(model.item_embeddings(), vectors)  # same seed, same data, same weights
