"""Every shipped run config parses: no unknown keys in any section, values accepted by each stage's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignrec.pipeline.config import load_run_config, run_config_from_dict
from alignrec.pipeline.stages import validate_sections

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_run_config(path)
    validate_sections(cfg.sections, str(path))
    assert cfg.sections["data"]["path"] and "${" not in cfg.sections["data"]["path"]


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
