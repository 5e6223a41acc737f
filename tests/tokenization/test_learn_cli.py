"""``alignrec learn``, ``embed --source learn``, ``assign-codes`` and the warm-only tokenizer of a cold split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignrec.cli import main
from recdata import RecDataset, leave_one_out_split
from recdata.cold_items import cold_item_split, items_without_training
from recdata.io import sha256_file
from tokenization.config import TokenizerConfig
from tokenization.embeddings import ItemEmbeddings
from tokenization.item_tokenizer import ItemTokenizer
from tokenization.pipeline import build_item_tokenizer, fit_item_tokenizer

LEARN_FLAGS = ["--learn_dim", "16", "--learn_heads", "2", "--learn_layers", "1", "--learn_max_len", "4",
               "--learn_batch_size", "4", "--learn_epochs", "4", "--learn_patience", "2", "--learn_seed", "0"]


def _text_flags(tmp_path, model_dir):
    return ["--text_encoder", "llm", "--llm_dir", str(model_dir), "--text_max_length", "32",
            "--cache_dir", str(tmp_path / "cache")]


def test_learn_cli_writes_model_vectors_metrics_and_resumes(tmp_path, tiny_split, tiny_model_dir):
    from alignrec.recommenders import LEARN

    tiny_split.save(tmp_path / "split")
    llm_files = {p.name: sha256_file(p) for p in tiny_model_dir.iterdir() if p.is_file()}
    argv = ["learn", "--split_dir", str(tmp_path / "split"), "--output_dir", str(tmp_path / "out"),
            *_text_flags(tmp_path, tiny_model_dir), *LEARN_FLAGS]
    assert main(argv) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    for key in ("epochs", "best_valid_ndcg@10", "seconds", "test_recall@10", "test_ndcg@20", "valid_cold_examples"):
        assert key in results
    assert results["test_cold_examples"] == 2 and "test_cold_recall@10" in results  # i6, i7 are never trained
    assert results["encoder"]["encode"]["items_per_second"] > 0
    vectors = np.load(out / "vectors.npy")
    model = LEARN.from_pretrained(out / "model")
    np.testing.assert_array_equal(vectors, model.item_embeddings())
    assert json.loads((out / "item_ids.json").read_text()) == tiny_split.dataset.item_ids()
    assert {p.name: sha256_file(p) for p in tiny_model_dir.iterdir() if p.is_file()} == llm_files  # LLM frozen
    epochs = (out / "metrics.jsonl").read_text()
    assert main(argv) == 0  # rerun: resumes from checkpoint.pt after the last epoch, trains nothing more
    assert (out / "metrics.jsonl").read_text() == epochs
    np.testing.assert_array_equal(np.load(out / "vectors.npy"), vectors)

    # `alignrec embed --source learn`: the same towers' item vectors (same config, seed and cached text)
    assert main(["embed", "--split_dir", str(tmp_path / "split"), "--output_dir", str(tmp_path / "emb"),
                 "--source", "learn", *_text_flags(tmp_path, tiny_model_dir), *LEARN_FLAGS]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "emb" / "vectors.npy"), vectors, atol=1e-6)


def test_assign_codes_cli_keeps_old_codes_and_codes_new_items(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(40)]
    x = rng.normal(size=(40, 8)).astype(np.float32)
    cfg = TokenizerConfig(num_levels=2, codebook_size=8, hidden_dims=[16], latent_dim=4, align_weight=0.0, rq_epochs=5)
    tok, _ = fit_item_tokenizer(ids[:30], x[:30], cfg)
    tok.save_pretrained(tmp_path / "tok")
    (tmp_path / "emb").mkdir()
    np.save(tmp_path / "emb" / "vectors.npy", x)
    (tmp_path / "emb" / "item_ids.json").write_text(json.dumps(ids))
    argv = ["assign-codes", "--tokenizer_dir", str(tmp_path / "tok"), "--embeddings_dir", str(tmp_path / "emb")]
    assert main([*argv, "--output_dir", str(tmp_path / "grown")]) == 0
    grown = ItemTokenizer.from_pretrained(tmp_path / "grown")
    assert grown.item_ids == ids and len({tuple(r) for r in grown.codes.tolist()}) == 40
    np.testing.assert_array_equal(grown.codes[:30], tok.codes)
    np.testing.assert_array_equal(grown.codes, tok.assign_new_items(ids[30:], x[30:]).codes)
    (tmp_path / "some.txt").write_text("i31\ni5\n")
    capsys.readouterr()
    assert main([*argv, "--output_dir", str(tmp_path / "bad"), "--item_ids", str(tmp_path / "some.txt")]) == 1
    assert "1 id(s) already have codes" in capsys.readouterr().err


def _cold_catalogue_split():
    rng = np.random.default_rng(1)
    items = [{"item_id": f"i{i}", "title": f"item {i}"} for i in range(48)]
    seqs = [{"user_id": f"u{u}", "item_ids": [f"i{j}" for j in rng.choice(48, size=6, replace=False)]} for u in range(60)]
    split = leave_one_out_split(RecDataset.from_records(items, seqs, name="cat").validate())
    return cold_item_split(split, 0.125, seed=0)


@pytest.mark.parametrize("mode", ["auto", "fit"])
def test_tokenizer_fits_on_warm_items_and_assigns_cold_ones(tmp_path, mode):
    split = _cold_catalogue_split()
    catalogue = split.dataset.item_ids()
    cold = items_without_training(split)
    assert 6 <= len(cold) < 48
    vectors = np.random.default_rng(2).normal(size=(48, 8)).astype(np.float32)
    emb = ItemEmbeddings(catalogue, vectors, {"kind": "test"})
    cfg = TokenizerConfig(num_levels=2, codebook_size=8, hidden_dims=[16], latent_dim=4, align_weight=0.0,
                          rq_epochs=5, cold_items=mode)
    tok = build_item_tokenizer(cfg, split, tmp_path / "tok", embeddings=emb)
    assert sorted(tok.item_ids) == sorted(catalogue)
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    warm = [i for i in catalogue if i not in set(cold)]
    rows = [catalogue.index(i) for i in warm]
    reference, _ = fit_item_tokenizer(warm, vectors[rows], cfg)
    if mode == "auto":  # the split uses the cold protocol: fit on warm items, then assign the cold ones
        assert tok.item_ids == warm + cold and report["cold_items_assigned"] == len(cold)
        np.testing.assert_array_equal(tok.codes[:len(warm)], reference.codes)
        cold_rows = [catalogue.index(i) for i in cold]
        np.testing.assert_array_equal(tok.codes, reference.assign_new_items(cold, vectors[cold_rows]).codes)
        assert report["content_hash"] == tok.content_hash == ItemTokenizer.from_pretrained(tmp_path / "tok").content_hash
    else:
        assert tok.item_ids == catalogue and "cold_items_assigned" not in report
