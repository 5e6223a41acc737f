"""Under the cold-item protocol the stages whose training now masks the cold items (embeddings: SASRec / LEARN;
tasks: records them for the LLM's trainer) carry that in their keys, so a cold run made before retrains; every other
run keeps its keys (tests/pipeline/test_stage_keys_stable.py)."""

from __future__ import annotations

from alignrec.pipeline.config import run_config_from_dict
from alignrec.pipeline.runner import plan_stages
from alignrec.pipeline.stages import STAGES
from tests.pipeline.test_stage_keys_stable import RUN, run_folder  # noqa: F401  (the fixture)


def _plans(run_cfg):
    return {p.name: p for p in plan_stages(STAGES, run_cfg.run_dir, run_cfg.sections, run_cfg)}


def test_cold_runs_key_the_mask_into_embeddings_and_tasks_only(run_folder, monkeypatch):  # noqa: F811
    cold = run_config_from_dict({**RUN, "data": {**RUN["data"], "cold_item_fraction": 0.1}}, source="keys.yaml")
    plans = _plans(cold)
    marked = [name for name, plan in plans.items() if plan.resolved.get("cold_softmax_mask")]
    assert marked == ["embeddings", "tasks"]
    assert not [name for name, plan in _plans(run_folder).items() if "cold_softmax_mask" in plan.resolved]
    assert not [name for name, plan in plans.items() if "cold_cf_imputed" in plan.resolved]  # file vectors: none
    import alignrec.pipeline.stages.embeddings as embeddings
    import alignrec.pipeline.stages.tasks as tasks

    for module in (embeddings, tasks):  # the keys a cold run had before the mask: every trained stage reruns
        monkeypatch.setattr(module, "cold_mask_key", lambda run_cfg: {})
    before = _plans(cold)
    assert [name for name in plans if plans[name].key != before[name].key] == [
        "embeddings", "tokenizer", "tasks", "train", "preference", "evaluate", "cache", "export"]


def test_fused_cold_runs_key_the_imputed_cf_rows():
    from types import SimpleNamespace

    from alignrec.pipeline.stages.embeddings import _embeddings_key

    def key(source, fraction):
        return _embeddings_key({"source": source}, SimpleNamespace(sections={"data": {"cold_item_fraction": fraction}}))

    assert key("fused", 0.1) == {"cold_softmax_mask": 1, "cold_cf_imputed": 1}
    assert key("text", 0.1) == {"cold_softmax_mask": 1}
    assert key("fused", 0.0) == {}


def test_fitted_cold_rows_key_the_train_stage_of_cold_llm_runs_only():
    from types import SimpleNamespace

    from alignrec.pipeline.stages.train import _train_key, cold_rows_mode

    def run(fraction, id_level=True):
        return SimpleNamespace(sections={"data": {"cold_item_fraction": fraction},
                                         "tokenizer": {"item_id_level": id_level}})

    rows = {"new_rows_init": "item_vectors"}  # the shipped configs' start (auto's own key: the test below)
    assert _train_key(rows, run(0.1)) == {"cold_rows": "fitted"}  # a pretrained LLM: auto fits
    assert _train_key({"model_init": "scratch"}, run(0.1)) == {}  # scratch: auto keeps the start rows
    assert _train_key({**rows, "cold_rows": "start"}, run(0.1)) == {}
    assert _train_key(rows, run(0.1, id_level=False)) == {}  # no rows of their own to fit
    assert _train_key({**rows, "cold_rows": "fitted"}, run(0.0)) == {} and cold_rows_mode({}, run(0.0)) is None


def test_auto_row_start_keys_its_resolution_for_a_pretrained_model_only():
    """``new_rows_init: auto`` on a pretrained model meant codebook rows before the four cells and item vectors now:
    its resolution joins the key (such a run retrains); explicit starts and scratch models keep their keys."""
    from types import SimpleNamespace

    from alignrec.pipeline.stages.train import _train_key
    from trainer.row_init import section_row_init

    plain = SimpleNamespace(sections={"data": {}})
    assert _train_key({}, plain) == {"new_rows_init_auto": "item_vectors"}
    assert _train_key({"new_rows_init": "auto"}, plain) == {"new_rows_init_auto": "item_vectors"}
    for explicit in ("item_vectors", "codebook", "mean"):
        assert _train_key({"new_rows_init": explicit}, plain) == {}
        assert section_row_init({"new_rows_init": explicit}) == explicit
    assert _train_key({"model_init": "scratch"}, plain) == {} and section_row_init({"model_init": "scratch"}) == "random"
