"""Every shipped config parses: run configs (configs/, configs/ablations/), every ablation variant as
bench_quality.py builds it, and the trainer/configs/ files; no unknown keys, values accepted by each stage's config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from alignrec.pipeline.config import load_run_config, run_config_from_dict
from alignrec.pipeline.stages import validate_sections
from recdata.config import load_yaml

ROOT = Path(__file__).resolve().parents[2]
ABLATION_FILES = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))
ABLATION_SPECS = [p for p in ABLATION_FILES if "variants" in load_yaml(p)]  # bench_quality.py --ablations files
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + [p for p in ABLATION_FILES if p not in ABLATION_SPECS]
TRAINER_CONFIGS = sorted((ROOT / "trainer" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_run_config(path)
    validate_sections(cfg.sections, str(path))
    assert cfg.sections["data"]["path"] and "${" not in cfg.sections["data"]["path"]


def _bench_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "scripts" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", ABLATION_SPECS, ids=[p.stem for p in ABLATION_SPECS])
def test_every_ablation_variant_is_valid(path):
    """Each variant as bench_quality.py runs it: its base + the budget + its overrides, scored on valid targets."""
    bench = _bench_quality()
    spec = load_yaml(path)
    base = bench.spec_base(spec, path)
    assert base is not None and base.is_file(), f"{path}: name the run config its variants are for in `base:`"
    variants = bench.variant_configs(load_run_config(base), spec, str(path))
    assert variants
    for variant, cfg in variants:
        validate_sections(cfg.sections, f"{path} [{variant['name']}]")
        assert cfg.sections["evaluate"]["part"] == "valid"


# Keys that add reporting rows or pick the scored part: they change no model the recipe trains or decodes.
REPORTING_KEYS = {("evaluate", "part"), ("evaluate", "sasrec_bce_baseline"), ("evaluate", "sasrec_tuned"),
                  ("evaluate", "sasrec_content")}


@pytest.mark.parametrize("path", [p for p in ABLATION_SPECS if "shipped" in load_yaml(p)],
                         ids=[p.stem for p in ABLATION_SPECS if "shipped" in load_yaml(p)])
def test_shipped_config_is_exactly_the_chosen_variant(path):
    """The spec's ``shipped: {variant, config}``: that config trains and decodes what the chosen row did."""
    bench = _bench_quality()
    spec = load_yaml(path)
    shipped = spec["shipped"]
    variants = dict((v["name"], cfg) for v, cfg in bench.variant_configs(load_run_config(bench.spec_base(spec, path)),
                                                                        spec, str(path)))
    chosen = variants[shipped["variant"]].sections
    config = load_run_config(path.parent / shipped["config"]).sections
    differ = sorted((section, key) for section in set(chosen) | set(config)
                    for key in set(chosen.get(section, {})) | set(config.get(section, {}))
                    if chosen.get(section, {}).get(key) != config.get(section, {}).get(key)
                    and (section, key) not in REPORTING_KEYS)
    assert not differ, f"{shipped['config']} differs from the chosen row {shipped['variant']!r} in {differ}"


@pytest.mark.parametrize("path", TRAINER_CONFIGS, ids=[p.stem for p in TRAINER_CONFIGS])
def test_trainer_config_parses(path, tmp_path):
    """``trainer/sft.py --config`` files parse with the two folders their usage line asks for."""
    from trainer.config import parse_train_config

    model, data, run, sft = parse_train_config(["--config", str(path), "--dataset_dir", str(tmp_path),
                                                "--item_tokenizer_dir", str(tmp_path)])
    assert data.dataset_dir == str(tmp_path) and sft.output_dir


@pytest.mark.parametrize("section, bad, match", [
    ("tokenizer", {"num_levls": 4}, "num_levls"),
    ("train", {"learning_rat": 1e-3}, "learning_rat"),
    ("tasks", {"output_dir": "x"}, "fills itself"),
    ("export", {"what": 1}, "takes no keys"),
])
def test_bad_sections_are_named(section, bad, match):
    cfg = run_config_from_dict({"name": "x", "data": {"path": "p"}, section: bad}, source="bad.yaml")
    with pytest.raises(ValueError, match=match):
        validate_sections(cfg.sections, cfg.source)


def test_unknown_top_level_key():
    with pytest.raises(ValueError, match="unknown top-level"):
        run_config_from_dict({"name": "x", "tokeniser": {}}, source="bad.yaml")


def test_cache_serves_the_evaluated_popularity_penalty_and_its_key_follows_it(tmp_path):
    """The cache stage decodes as the evaluate section did unless its own section says otherwise."""
    from alignrec.pipeline.runner import plan_stages
    from alignrec.pipeline.stages import STAGES

    def cache_key(**sections):
        cfg = run_config_from_dict({"name": "x", "runs_dir": str(tmp_path), "data": {"path": str(tmp_path / "d")},
                                    **sections}, source="t.yaml")
        return {p.name: p.key for p in plan_stages(STAGES, cfg.run_dir, cfg.sections, cfg)}["cache"]

    plain = cache_key()
    assert cache_key(evaluate={"popularity_penalty": 0.0}) == plain  # 0 is the default: old caches stay valid
    penalised = cache_key(evaluate={"popularity_penalty": 0.5})
    assert penalised != plain and cache_key(evaluate={"popularity_penalty": 0.25}) != penalised
    own = {"popularity_penalty": 0.0}
    assert cache_key(evaluate={"popularity_penalty": 0.5}, cache=own) == cache_key(evaluate={"popularity_penalty": 0.25}, cache=own)


def test_cache_decodes_with_the_evaluated_item_head_weight_and_its_key_follows_it(tmp_path):
    """evaluate.item_head_decode_weight reaches the cache as popularity_penalty does; unset, no key changes."""
    from alignrec.pipeline.runner import plan_stages
    from alignrec.pipeline.stages import STAGES
    from alignrec.pipeline.stages.cache import _evaluated_decoding

    def keys(**sections):
        cfg = run_config_from_dict({"name": "x", "runs_dir": str(tmp_path), "data": {"path": str(tmp_path / "d")},
                                    **sections}, source="t.yaml")
        return {p.name: p.key for p in plan_stages(STAGES, cfg.run_dir, cfg.sections, cfg)}, cfg

    plain, _ = keys()
    assert keys(evaluate={"item_head_decode_weight": None})[0]["cache"] == plain["cache"]  # None: old caches stay valid
    weighted, cfg = keys(evaluate={"item_head_decode_weight": 2.0})
    assert weighted["cache"] != plain["cache"] and keys(evaluate={"item_head_decode_weight": 0.5})[0]["cache"] != \
        weighted["cache"]
    assert _evaluated_decoding({}, cfg) == {"item_head_decode_weight": 2.0}  # what run_cache injects
    own = {"item_head_decode_weight": 1.0}  # the cache section's own value wins, as for popularity_penalty
    assert _evaluated_decoding(own, cfg) == {}
    assert keys(evaluate={"item_head_decode_weight": 2.0}, cache=own)[0]["cache"] == \
        keys(evaluate={"item_head_decode_weight": 0.5}, cache=own)[0]["cache"]


def test_item_head_override_needs_a_train_section_with_the_head_and_is_a_recipe_tune_axis():
    from alignrec.pipeline.recipe_tune import _validate_points, check_space, start_point

    base = {"name": "x", "data": {"path": "p"}, "evaluate": {"item_head_decode_weight": 2.0}}
    cfg = run_config_from_dict(base, source="t.yaml")
    with pytest.raises(ValueError, match="evaluate.item_head_decode_weight needs a model trained with the item head"):
        validate_sections(cfg.sections, cfg.source)
    cfg = run_config_from_dict({**base, "train": {"item_head_weight": 4.0}}, source="t.yaml")
    validate_sections(cfg.sections, cfg.source)
    space = check_space({"evaluate.item_head_decode_weight": [0.5, 2.0]}, "space.yaml")
    start = start_point(cfg, space)
    assert start == {"evaluate.item_head_decode_weight": 2.0}
    _validate_points(cfg, space, start)  # every point passes the sections' own checks before any training
    with pytest.raises(ValueError, match=">= 0"):
        _validate_points(cfg, check_space({"evaluate.item_head_decode_weight": [-1.0]}, "space.yaml"), start)
