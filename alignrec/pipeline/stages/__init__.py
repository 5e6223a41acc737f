"""The stages of ``alignrec run``, one module per stage (``preference`` is optional), each a thin call into its
stage library; this package lists them in run order (``STAGES``) and checks every section before any stage runs.

A stage module holds its ``STAGE`` (``alignrec.pipeline.runner.Stage``: the stage's name, the stages whose folders
it reads, the files outside the run it reads, what enters its key besides its section and its code ``version``)
and the function that writes its folder. Shared section handling lives in ``alignrec.pipeline.sections`` and
the training launch in ``alignrec.pipeline.launch``; stage modules never import each other (import contract).
Stage names, section keys and stage keys are those of the single ``stages.py`` this package replaced, so a run
folder made before still counts as complete (tests/pipeline/test_stage_keys_stable.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from alignrec.pipeline.bar_rows import check_bar_section
from alignrec.pipeline.runner import Stage
from alignrec.pipeline.sections import (
    INJECTED_KEYS,
    PIPELINE_ONLY_KEYS,
    SECTION_CLASSES,
    check_injected,
    preference_enabled,
    sasrec_knowledge_kinds,
    served_model_dir,
    stage_keys,
    train_model_dir,
    uses_knowledge,
)
from alignrec.pipeline.stages import (
    cache,
    data,
    embeddings,
    evaluate,
    export,
    knowledge,
    preference,
    tasks,
    tokenizer,
    train,
)
from alignrec.pipeline.stages.evaluate import SFT_ROW
from recdata.config import parse_config
from recdata.errors import ConfigError

__all__ = ["INJECTED_KEYS", "PIPELINE_ONLY_KEYS", "SECTION_CLASSES", "SFT_ROW", "STAGES", "preference_enabled",
           "sasrec_knowledge_kinds", "served_model_dir", "train_model_dir", "validate_sections"]

STAGES: list[Stage] = [data.STAGE, knowledge.STAGE, embeddings.STAGE, tokenizer.STAGE, tasks.STAGE, train.STAGE,
                       preference.STAGE, evaluate.STAGE, cache.STAGE, export.STAGE]


def _validate_train_values(body: dict[str, Any], injected: Sequence[str], source: str) -> None:
    """Parse the train section exactly as the train stage will (values too: ``finetune_mode: lorra``)."""
    import tempfile

    import yaml

    from trainer.config import parse_train_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.yaml"
        path.write_text(yaml.safe_dump({**body, **{k: str(Path(tmp) / k) for k in injected}}))
        try:
            parse_train_config(["--config", str(path)])
        except ConfigError as exc:
            raise ConfigError(f"{source} [train]: {str(exc).replace(str(path) + ': ', '')}") from exc


def validate_sections(sections: dict[str, dict[str, Any]], source: str) -> None:
    """Check every section's keys (and values, where no GPU is needed to check them) before any stage runs."""
    for stage, section in sections.items():
        injected = INJECTED_KEYS.get(stage, ())
        body = stage_keys(stage, section)
        check_injected(stage, body, injected, source)
        if stage == "evaluate":
            check_bar_section(section)
        if stage == "evaluate" and (section.get("llm4msr") or "scenario_backbone" in section):
            from alignrec.pipeline.scenario_rows import validate_scenario_rows

            validate_scenario_rows(section, source)
        if stage == "train":
            from trl import SFTConfig

            from trainer.config import AlignRecTrainArguments, DataArguments, ModelArguments

            known = {f.name for cls in (ModelArguments, DataArguments, AlignRecTrainArguments, SFTConfig) for f in fields(cls)}
            unknown = sorted(set(body) - known)
            if unknown:
                raise ConfigError(f"{source}: unknown key(s) {unknown} in section 'train'; see `alignrec train --help`")
            _validate_train_values(body, injected, source)
        elif stage == "preference":
            preference.validate_preference_section(section, body, source)
        elif stage == "export":
            if body:
                raise ConfigError(f"{source}: section 'export' takes no keys, got {sorted(body)}")
        elif stage in SECTION_CLASSES:
            placeholders = {k: "placeholder" for k in injected}
            if stage == "embeddings" and uses_knowledge(section) and "knowledge_dir" not in body:
                if not sections.get("knowledge"):
                    raise ConfigError(f"{source}: section 'embeddings' reads knowledge vectors; fill the "
                                     "'knowledge' section or set embeddings.knowledge_dir")
                placeholders["knowledge_dir"] = "placeholder"
            parse_config(SECTION_CLASSES[stage](), [], config={**body, **placeholders}, config_source=f"{source} [{stage}]")
    _check_item_head_override(sections, source)


def _check_item_head_override(sections: dict[str, dict[str, Any]], source: str) -> None:
    """``item_head_decode_weight`` and ``item_vector_prior_weight`` (evaluate, cache) act through the flat item head:
    refused before any stage runs when the train section trains none (the stage would fail after training)."""
    if float(sections.get("train", {}).get("item_head_weight") or 0.0):
        return
    for stage in ("evaluate", "cache"):
        section = sections.get(stage, {})
        used = [key for key, off in (("item_head_decode_weight", None), ("item_vector_prior_weight", 0.0))
                if section.get(key, off) not in (off, None)]  # unset, or the prior at its default 0: no head needed
        if used:
            raise ConfigError(f"{source}: {stage}.{used[0]} needs a model trained with the item head "
                              "(train.item_head_weight > 0); drop the key or train with the head")
