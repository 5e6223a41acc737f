"""`alignrec cache build | publish | get` end to end: popularity baseline and a tiny trained-run folder."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from inference.cache import CacheMismatchError, iter_cache, read_manifest
from inference.cache.cli import CacheBuildConfig, register_cache_commands, split_users
from recdata.io import atomic_write_json


def _cli(argv: list[str]) -> int:
    """What `alignrec` does: parse the command path, hand the rest to the handler."""
    parser = argparse.ArgumentParser(prog="alignrec")
    register_cache_commands(parser.add_subparsers(dest="command", required=True))
    args, rest = parser.parse_known_args(argv)
    return args.handler(args, rest)


@pytest.fixture
def split_dir(tmp_path, tiny_split):
    path = tmp_path / "split"
    tiny_split.save(path)
    return path


def test_popularity_build_publish_get(tmp_path, split_dir, tiny_split, capsys):
    out, store = tmp_path / "cache", tmp_path / "store"
    assert _cli(["cache", "build", "--recommender", "popularity", "--split_dir", str(split_dir), "--out_dir", str(out),
                 "--k", "3", "--chunk_size", "2"]) == 0
    manifest = read_manifest(out)
    assert manifest["num_users"] == 5 and manifest["k"] == 3
    assert _cli(["cache", "publish", "--cache_dir", str(out), "--store_dir", str(store), "--split_dir",
                 str(split_dir)]) == 0
    capsys.readouterr()
    assert _cli(["cache", "get", "u1", "--store_dir", str(store), "nobody"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    counts: dict[str, int] = {}
    for _, items in tiny_split.train_sequences():
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    ranking = sorted(tiny_split.dataset.item_ids(), key=lambda i: (-counts.get(i, 0), i))
    history = set(tiny_split.serving_histories()["u1"])
    want_u1 = [[i, float(counts.get(i, 0))] for i in ranking if i not in history][:3]
    assert lines[0] == {"user_id": "u1", "items": want_u1, "fallback": False, "version": lines[0]["version"]}
    assert lines[1]["fallback"] is True and lines[1]["items"] == [[i, float(counts[i])] for i in ranking[:3]]


def test_users_file_and_bad_ids(tmp_path, split_dir):
    users = tmp_path / "users.txt"
    users.write_text("u2\n\nu4\n")
    _cli(["cache", "build", "--recommender", "popularity", "--split_dir", str(split_dir), "--out_dir",
          str(tmp_path / "c"), "--k", "2", "--users_file", str(users)])
    assert sorted(u for u, _, _ in iter_cache(tmp_path / "c")) == ["u2", "u4"]
    users.write_text("u2\nghost\n")
    with pytest.raises(ValueError, match=r"users.txt:2: user 'ghost'"):
        _cli(["cache", "build", "--recommender", "popularity", "--split_dir", str(split_dir), "--out_dir",
              str(tmp_path / "d"), "--k", "2", "--users_file", str(users)])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"recommender": "model"}, "--model_dir is required"),
    ({"recommender": "sasrec", "model_dir": "m"}, "recommender must be"),
    ({"model_dir": "m", "k": 5, "num_beams": 3}, "num_beams"),
    ({"model_dir": "m", "chunk_size": 0}, "chunk_size"),
    ({"recommender": "popularity", "popularity_penalty": 0.5}, "popularity_penalty needs"),
])
def test_build_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CacheBuildConfig(split_dir="s", out_dir="o", **kwargs)


def test_split_users():
    assert split_users(["u1", "--store_dir", "S", "u2", "--config=c.yaml", "u3"]) == (
        ["u1", "u2", "u3"], ["--store_dir", "S", "--config=c.yaml"])


def _tiny_run(path, tiny_dataset, hf_tok, model, item_id_level: bool = False):
    """A full-model run folder as trainer.save_run lays it out: weights, tokenizer, item_tokenizer/, manifest.
    Codes: (cluster, slot in it), or with ``item_id_level`` (cluster, the item's own token)."""
    from tokenization import ItemTokenizer
    from trainer.export import ITEM_TOKENIZER_DIR, MANIFEST_FILE, build_manifest

    item_ids = tiny_dataset.item_ids()
    n = len(item_ids)
    codes = np.array([[i // 3, i if item_id_level else i % 3] for i in range(n)], dtype=np.int64)
    item_tok = ItemTokenizer.from_codes(item_ids, codes, [3, n if item_id_level else 3])
    code_ids = item_tok.add_to_tokenizer(hf_tok)
    model.resize_token_embeddings(len(hf_tok))
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    item_tok.save_pretrained(path / ITEM_TOKENIZER_DIR)
    atomic_write_json(path / MANIFEST_FILE, build_manifest("full", "tiny", item_tok, code_ids, len(hf_tok)))
    return item_tok


def test_model_build_matches_direct_recommend(tmp_path, split_dir, tiny_dataset, tiny_split, tiny_chat_tokenizer,
                                              tiny_llama):
    import torch

    from inference import recommend
    from sft_tasks import seqrec_prompt
    from trainer import load_for_inference

    run = tmp_path / "run"
    item_tok = _tiny_run(run, tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    argv = ["cache", "build", "--model_dir", str(run), "--split_dir", str(split_dir), "--out_dir",
            str(tmp_path / "c"), "--k", "3", "--num_beams", "4", "--chunk_size", "2", "--device", "cpu"]
    _cli(argv)
    manifest = read_manifest(tmp_path / "c")
    assert manifest["item_tokenizer_hash"] == item_tok.content_hash and manifest["adapter"] == ""
    assert manifest["model"].startswith(str(run.resolve()) + "@")

    model, hf_tok, item_tok = load_for_inference(run, device="cpu")
    histories = tiny_split.serving_histories()
    users = sorted(histories)
    prompts = [seqrec_prompt(histories[u], item_tok, hf_tok) for u in users]
    want = recommend(model, hf_tok, item_tok, prompts, 3, 4, exclude=[histories[u] for u in users])
    got = {u: recs for u, _, recs in iter_cache(tmp_path / "c")}
    for user, ref in zip(users, want, strict=True):
        assert [i for i, _ in got[user]] == [i for i, _ in ref]
        assert np.allclose([s for _, s in got[user]], [s for _, s in ref], atol=1e-5)
        assert not set(histories[user]) & {i for i, _ in got[user]}
        assert len(got[user]) == min(3, 8 - len(set(histories[user])))  # catalogue of 8 minus the history

    with torch.no_grad():  # "retrained": same item index and tokenizer, other weights
        tiny_llama.lm_head.weight.add_(0.01)
    tiny_llama.save_pretrained(run)
    with pytest.raises(CacheMismatchError, match="model"):
        _cli(argv)


def test_popularity_penalty_build_serves_the_penalised_decoding_and_is_another_cache(
        tmp_path, split_dir, tiny_dataset, tiny_split, tiny_chat_tokenizer, tiny_llama):
    from inference import llm_recommender
    from recdata.popularity import train_popularity
    from trainer import load_for_inference

    run = tmp_path / "run"
    _tiny_run(run, tiny_dataset, tiny_chat_tokenizer, tiny_llama)
    argv = ["cache", "build", "--model_dir", str(run), "--split_dir", str(split_dir), "--out_dir",
            str(tmp_path / "c"), "--k", "3", "--num_beams", "8", "--chunk_size", "4", "--device", "cpu",
            "--popularity_penalty", "0.5"]
    _cli(argv)
    assert read_manifest(tmp_path / "c")["model"].endswith("#popularity_penalty=0.5")
    model, hf_tok, item_tok = load_for_inference(run, device="cpu")
    fn = llm_recommender(model, hf_tok, item_tok, 3, 8, popularity_penalty=0.5, item_counts=train_popularity(tiny_split))
    histories = tiny_split.serving_histories()
    users = sorted(histories)
    got = {u: recs for u, _, recs in iter_cache(tmp_path / "c")}
    for user, ref in zip(users, fn(users, [histories[u] for u in users]), strict=True):
        assert [i for i, _ in got[user]] == [i for i, _ in ref]
        assert np.allclose([s for _, s in got[user]], [s for _, s in ref], atol=1e-5)
    with pytest.raises(CacheMismatchError, match="model"):  # plain decoding into the same folder: refused
        _cli(argv[:-2])
