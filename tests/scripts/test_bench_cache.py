"""scripts/bench_cache.py --engine ray: the model shapes it builds (the tiny Llama unchanged by default, the scratch
recipe's Phi at any shape), its config checks, the torch threads each run reports, and (slow: a Ray local cluster)
the whole ray mode on a tiny model: every run byte-identical to the local engine, 1 actor x 2 threads really on 2."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from inference.cache.location import open_location
from tests.conftest import build_tiny_llama
from tests.scripts import loaded_script


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("bench_cache")


@pytest.fixture
def threads():
    """Restore this process's torch threads after a test changes them."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_model_is_the_test_suites_tiny_llama(bench):
    model, hf_tok, item_tok = bench.tiny_llm_recommender_parts(bench.ModelShape(num_items=100))
    reference = build_tiny_llama(len(hf_tok), seed=0).state_dict()
    assert type(model).__name__ == "LlamaForCausalLM" and list(item_tok.codebook_sizes) == [8, 8, 8]
    assert model.state_dict().keys() == reference.keys()
    assert all(torch.equal(t, reference[name]) for name, t in model.state_dict().items())


def test_phi_shape_is_built_as_asked_and_recommends(bench):
    shape = bench.ModelShape("phi", hidden=32, layers=1, intermediate=48, num_items=600)  # past the 512-item grid
    model, hf_tok, item_tok = bench.tiny_llm_recommender_parts(shape)
    c = model.config
    assert type(model).__name__ == "PhiForCausalLM" and len(model.model.layers) == 1
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (32, 1, 48)
    assert list(item_tok.codebook_sizes) == [64, 600] and len(hf_tok) == 3 + 64 + 600 == c.vocab_size
    fn = bench._TinyLLMFactory(shape, k=5, num_beams=8, batch_size=2)()
    histories = [["i1", "i599"], ["i7"], ["i300", "i2", "i9"]]
    recs = fn(["u0", "u1", "u2"], histories)
    assert [len(r) for r in recs] == [5, 5, 5]
    for history, row in zip(histories, recs, strict=True):
        items = [item for item, _ in row]
        assert len(set(items)) == 5 and not set(items) & set(history)
        assert all(0 <= int(item[1:]) < 600 for item in items)


def test_phi_mirrors_the_training_scratch_model(bench):
    """The bench's Phi is the one `model_init: scratch` trains (mirrored to keep trl out of every Ray actor)."""
    from trainer.config import ModelArguments
    from trainer.model_setup import build_scratch_model

    model, hf_tok, _ = bench.tiny_llm_recommender_parts(bench.ModelShape("phi", 32, 2, 64, 70))
    args = ModelArguments(model_init="scratch", finetune_mode="full", scratch_architecture="phi", scratch_layers=2,
                          scratch_hidden=32, scratch_heads=4, scratch_intermediate=64, scratch_max_positions=128)
    trained = build_scratch_model(args, len(hf_tok), hf_tok, torch.float32)
    assert type(trained) is type(model) and trained.config.to_dict() == model.config.to_dict()


def test_ray_catalogue_defaults_to_the_capped_one(bench):
    assert bench.BenchCacheConfig(num_items=50_000).ray_num_items == 512
    assert bench.BenchCacheConfig(num_items=300).ray_num_items == 300
    assert bench.BenchCacheConfig(model_arch="phi", model_items=1349).ray_num_items == 1349


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model_arch": "gpt2"}, "model_arch must be one of"),
    ({"model_hidden": 60}, "model_hidden must be a positive multiple of 8"),
    ({"model_layers": 0}, "model_layers, model_intermediate >= 1"),
    ({"model_items": -1}, "model_items and num_beams must be >= 0"),
    ({"beam_batch_size": 0}, "beam_batch_size and max_history >= 1"),
    ({"model_items": 600}, "3 x 8 grid .* use --model_arch phi"),
    ({"k": 20, "num_beams": 10}, r"num_beams \(10\) must be >= k \(20\)"),
])
def test_config_refuses_bad_model_settings(bench, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.BenchCacheConfig(**kwargs)


def test_actor_builds_its_model_with_the_runs_torch_threads(bench, tmp_path, threads):
    """RayOptions.cpus_per_actor reaches torch in the ChunkWriter before the model is built; the log proves it."""
    from inference.cache.ray_build import ChunkWriter

    log = tmp_path / "threads"
    factory = bench._TinyLLMFactory(bench.ModelShape(num_items=64), k=3, threads_log=str(log))
    torch.set_num_threads(1)
    ChunkWriter(factory, open_location(tmp_path / "out"), "shard-00000-of-00001", 3, 10, 10, np.asarray(["d"]), 2)
    assert torch.get_num_threads() == 2 and log.read_text().split() == ["2"]


def test_compare_chunks_tells_bytes_items_and_score_gaps_apart(bench, tmp_path):
    from inference.cache import build_cache

    histories = {f"u{n}": [f"i{n}"] for n in range(12)}
    base = bench.trivial_recommender(50, 3)

    def nudged(shift: int, delta: float):
        def fn(users, hists):
            return [[(f"i{(int(i[1:]) + shift) % 50}", s + delta) for i, s in row] for row in base(users, hists)]
        return fn

    for name, fn in (("ref", base), ("same", base), ("scores", nudged(0, 2e-6)), ("items", nudged(1, 0.0))):
        build_cache(fn, histories, tmp_path / name, 3, 0, 1, chunk_size=5, progress=False)
    assert bench.compare_chunks(tmp_path / "ref", tmp_path / "same") == {
        "identical_chunks": True, "same_items": True, "max_score_diff": 0.0}
    scores = bench.compare_chunks(tmp_path / "ref", tmp_path / "scores")
    assert not scores["identical_chunks"] and scores["same_items"] and 0 < scores["max_score_diff"] < 1e-5
    assert bench.compare_chunks(tmp_path / "ref", tmp_path / "items") == {
        "identical_chunks": False, "same_items": False, "max_score_diff": None}


def test_local_shards_at_once_give_the_one_process_rows(bench, tmp_path, threads):
    """The no-Ray control: 2 spawned processes, each a shard with 1 torch thread, store the 1-process build's rows."""
    from inference.cache import build_cache

    histories = {f"u{n}": [f"i{(3 * n) % 64}", f"i{(5 * n + 1) % 64}"][: 1 + n % 2] for n in range(14)}
    factory = bench._TinyLLMFactory(bench.ModelShape(num_items=64), k=3, threads_log=str(tmp_path / "log"))
    torch.set_num_threads(1)
    build_cache(factory(), histories, tmp_path / "one", 3, 0, 1, chunk_size=4, progress=False)
    wall, shard_s = bench.run_local_shards(factory, histories, tmp_path / "two", 3, 4)
    assert len(shard_s) == 2 and 0 < max(shard_s) < wall
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*")) == ["shard-00000-of-00002",
                                                                          "shard-00001-of-00002"]
    assert (tmp_path / "two" / "manifest.json").exists()
    compared = bench.compare_chunks(tmp_path / "one", tmp_path / "two")
    assert not compared["identical_chunks"] and compared["same_items"]  # other files, the same rows
    assert compared["max_score_diff"] < 1e-4  # other batches of users: last bits only
    assert (tmp_path / "log").read_text().split() == ["1", "1", "1"]  # the parent's build + one per shard process


@pytest.mark.slow
def test_ray_mode_end_to_end_on_a_tiny_model(bench, tmp_path, threads, monkeypatch, capsys):
    ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install 'alignrec[ray]'")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("2 actors / 2 threads per actor need 2 CPUs")
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", os.environ.get("RAY_raylet_start_wait_time_s", "300"))
    ray.cloudpickle.register_pickle_by_value(bench)  # actors cannot import a script: send its factory by value
    try:
        cfg = bench.BenchCacheConfig(engine="ray", num_users=30, k=3, chunk_size=10, model_items=64,
                                     out=str(tmp_path / "r.json"))
        results = bench.run_ray(cfg, tmp_path)
        bench.print_ray(cfg, results)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(bench)
    assert results["ray1_identical_chunks"] and results["ray2_identical_chunks"] and results["local2_same_items"]
    assert results["ray1x2_same_items"] and results["ray1x2_max_score_diff"] < 1e-3  # 2 threads: last bits only
    assert {key: results[f"{key}_torch_threads"] for key in ("local", "ray1", "ray2", "ray1x2")} == {
        "local": [1], "local2": [1], "ray1": [1], "ray2": [1], "ray1x2": [2]}
    assert results["speedup_ray2_over_ray1"] == pytest.approx(results["ray1_s"] / results["ray2_s"])
    assert results["speedup_ray2_over_ray1x2"] == pytest.approx(results["ray1x2_s"] / results["ray2_s"])
    assert results["speedup_local2_over_local"] == pytest.approx(results["local_s"] / results["local2_s"])
    out = capsys.readouterr().out
    assert "1 actor x 2 torch threads" in out and "control without ray" in out
