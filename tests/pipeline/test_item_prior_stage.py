"""``item_vector_prior_weight`` in ``alignrec run``: part of the evaluate key (and, inherited, the cache's), never
the train key; refused before any stage runs without an item head; evaluate and cache read ``<run>/embeddings``."""

from __future__ import annotations

import pytest

from alignrec.pipeline.config import run_config_from_dict
from alignrec.pipeline.runner import StageContext, plan_stages
from alignrec.pipeline.stages import STAGES, validate_sections

HEAD = {"item_head_weight": 4.0}


def _config(tmp_path, **sections):
    return run_config_from_dict({"name": "x", "runs_dir": str(tmp_path), "data": {"path": str(tmp_path / "d")},
                                 "train": HEAD, **sections}, source="t.yaml")


def _keys(tmp_path, **sections) -> dict[str, str]:
    cfg = _config(tmp_path, **sections)
    return {p.name: p.key for p in plan_stages(STAGES, cfg.run_dir, cfg.sections, cfg)}


def test_the_weight_re_keys_evaluate_and_the_cache_but_not_train(tmp_path):
    plain = _keys(tmp_path)
    zero = _keys(tmp_path, evaluate={"item_vector_prior_weight": 0.0})  # the default, written out
    assert zero["train"] == plain["train"] and zero["cache"] == plain["cache"]  # the cache inherits nothing at 0
    weighted = _keys(tmp_path, evaluate={"item_vector_prior_weight": 0.5})
    changed = sorted(name for name in plain if weighted[name] != plain[name])
    assert changed == ["cache", "evaluate"]  # train (and everything before it) keeps its key: it is not re-run
    other = _keys(tmp_path, evaluate={"item_vector_prior_weight": 2.0})
    assert other["evaluate"] != weighted["evaluate"] and other["cache"] != weighted["cache"]
    own = {"item_vector_prior_weight": 0.0}  # the cache section's own value wins over the evaluated one
    assert _keys(tmp_path, evaluate={"item_vector_prior_weight": 0.5}, cache=own)["cache"] == \
        _keys(tmp_path, evaluate={"item_vector_prior_weight": 2.0}, cache=own)["cache"]


def test_the_prior_needs_a_train_section_with_the_head_and_the_run_s_own_vectors():
    base = {"name": "x", "data": {"path": "p"}, "evaluate": {"item_vector_prior_weight": 0.5}}
    cfg = run_config_from_dict(base, source="t.yaml")
    with pytest.raises(ValueError, match="evaluate.item_vector_prior_weight needs a model trained with the item head"):
        validate_sections(cfg.sections, cfg.source)
    validate_sections(run_config_from_dict({**base, "train": HEAD}, source="t.yaml").sections, "t.yaml")
    plain = run_config_from_dict({**base, "evaluate": {"item_vector_prior_weight": 0.0}}, source="t.yaml")
    validate_sections(plain.sections, "t.yaml")  # 0: no prior, no head needed
    for stage in ("evaluate", "cache"):  # the pipeline fills the vectors folder itself
        cfg = run_config_from_dict({**base, "train": HEAD, stage: {"item_vectors": "elsewhere"}}, source="t.yaml")
        with pytest.raises(ValueError, match="which the pipeline fills itself"):
            validate_sections(cfg.sections, cfg.source)


class _Stop(Exception):
    pass


def test_evaluate_and_cache_stages_pass_the_weight_and_the_run_s_embeddings(tmp_path, monkeypatch):
    import inference.cache.cli as cache_cli
    import inference.cli as evaluate_cli
    from alignrec.pipeline.stages import cache, evaluate

    seen = {}

    def capture(name):
        def fn(cfg, *args, **kwargs):
            seen[name] = cfg
            raise _Stop

        return fn

    monkeypatch.setattr(evaluate_cli, "run_evaluate", capture("evaluate"))
    monkeypatch.setattr(cache_cli, "run_build", capture("cache"))
    cfg = _config(tmp_path, evaluate={"item_vector_prior_weight": 0.5})
    dirs = {s.name: cfg.run_dir / s.name for s in STAGES}
    for stage, run in (("evaluate", evaluate.run_evaluate), ("cache", cache.run_cache)):
        ctx = StageContext(cfg.run_dir, dirs[stage], dict(cfg.sections.get(stage, {})), cfg, dirs)
        with pytest.raises(_Stop):
            run(ctx)
        assert seen[stage].item_vector_prior_weight == 0.5  # the cache serves what was evaluated
        assert seen[stage].item_vectors == str(dirs["embeddings"])
