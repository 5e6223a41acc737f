"""The evaluate stage's multi-scenario rows: the backbone (per-scenario towers) and the backbone + LLM4MSR.

Two pipeline-only keys of the ``evaluate`` section turn them on (a run without them keeps its key):

    evaluate:
      scenario_backbone: true          # row "backbone (per-scenario towers)"
      llm4msr:                         # row "backbone + LLM4MSR meta layers" (extract -> encode -> train, here)
        user_sample: 300               # any `alignrec scenarios extract` key (split_dir / out_dir are filled)
        user_clusters: 64
        encoder: sentence              # `alignrec knowledge encode`: sentence | llm (+ encoder_dir)
        meta_rank: 4                   # `alignrec scenarios train`: meta_rank, meta_hidden

Both train with the embeddings section's SASRec hyper-parameters (as the ``sasrec`` row) on the data stage's
split, which must carry scenarios. The LLM answers go to ``<run>/llm4msr_answers.cache.jsonl`` (outside the stage
folder), so re-running the stage (e.g. another ``meta_rank``) asks no prompt twice.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from alignrec.pipeline.runner import StageContext
from recdata.errors import ConfigError, UserError

logger = logging.getLogger(__name__)

__all__ = ["ENCODE_KEYS", "TRAIN_KEYS", "llm4msr_inputs", "llm4msr_sections", "scenario_rows",
           "validate_scenario_rows"]

ENCODE_KEYS = ("encoder", "encoder_dir")
TRAIN_KEYS = ("meta_rank", "meta_hidden")
INJECTED = ("split_dir", "out_dir")


def llm4msr_sections(section: Any, source: str = "run config") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``evaluate.llm4msr`` split into (extract keys, encode keys, train keys); unknown keys are a ConfigError."""
    from alignrec.llm4msr import ScenarioExtractConfig

    if section is True:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: evaluate.llm4msr must be a mapping of `alignrec scenarios extract` keys "
                          f"(or true for the defaults), got {section!r}")
    extract_keys = {f.name for f in fields(ScenarioExtractConfig)} - set(INJECTED)
    unknown = sorted(set(section) - extract_keys - set(ENCODE_KEYS) - set(TRAIN_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in evaluate.llm4msr; see `alignrec scenarios extract "
                          f"--help`, or {list(ENCODE_KEYS + TRAIN_KEYS)}")
    clash = sorted(set(section) & set(INJECTED))
    if clash:
        raise ConfigError(f"{source}: evaluate.llm4msr sets {clash}, which the pipeline fills itself; remove them")
    pick = lambda keys: {k: v for k, v in section.items() if k in keys}  # noqa: E731
    return pick(extract_keys), pick(ENCODE_KEYS), pick(TRAIN_KEYS)


def llm4msr_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The LLM and the encoder folders the LLM4MSR row reads (their content enters the evaluate key)."""
    from recdata.paths import default_llm_dir, default_sentence_encoder_dir

    if not section.get("llm4msr"):
        return {}
    extract, encode, _ = llm4msr_sections(section["llm4msr"])
    default_encoder = default_sentence_encoder_dir() if encode.get("encoder", "sentence") == "sentence" \
        else default_llm_dir()
    return {"llm4msr_llm": str(extract.get("llm_dir") or default_llm_dir()),
            "llm4msr_encoder": str(encode.get("encoder_dir") or default_encoder)}


def validate_scenario_rows(section: dict[str, Any], source: str) -> None:
    """Check ``evaluate.scenario_backbone`` and parse ``evaluate.llm4msr`` as the stage will (before any stage runs)."""
    from alignrec.knowledge import EncodeConfig
    from alignrec.llm4msr import ScenarioExtractConfig, ScenarioTrainConfig
    from recdata.config import parse_config

    if not isinstance(section.get("scenario_backbone", False), bool):
        raise ConfigError(f"{source}: evaluate.scenario_backbone must be true or false, "
                          f"got {section['scenario_backbone']!r}")
    if not section.get("llm4msr"):
        return
    extract, encode, train = llm4msr_sections(section["llm4msr"], source)
    parse_config([ScenarioExtractConfig], [], config={**extract, **{k: "placeholder" for k in INJECTED}},
                 config_source=f"{source} [evaluate.llm4msr]")
    parse_config([EncodeConfig], [], config=encode, config_source=f"{source} [evaluate.llm4msr]")
    parse_config([ScenarioTrainConfig], [], config=train, config_source=f"{source} [evaluate.llm4msr]")


def scenario_rows(ctx: StageContext, k: int, exclude_history: bool) -> dict[str, Any]:
    """``{row name: recommend_fn}`` for the rows the evaluate section turns on (models saved in the stage folder)."""
    from alignrec.knowledge import EncodeConfig
    from alignrec.knowledge.cli import run_encode
    from alignrec.llm4msr import ROW_NAMES, ScenarioExtractConfig, recommend_fn_for, train_scenario_model
    from alignrec.llm4msr.cli import run_scenario_extract
    from alignrec.pipeline.sections import build_section, embedding_classes
    from recdata import SplitDataset
    from recdata.config import parse_config

    split = SplitDataset.load(ctx.upstream("data") / "split")
    if not split.has_scenarios:
        raise UserError("evaluate.scenario_backbone / evaluate.llm4msr need a split with scenarios: set "
                        "data.scenario_item_field (e.g. domain) or data.scenario_column")
    (emb_cfg,) = build_section(embedding_classes(), ctx.run_config.sections.get("embeddings", {}), {}, "embeddings")
    sasrec_cfg = emb_cfg.sasrec_config()
    rows: dict[str, Any] = {}
    if ctx.config.get("scenario_backbone"):
        model = train_scenario_model("backbone", split, sasrec_cfg, log_file=ctx.out_dir / "backbone_metrics.jsonl")
        model.save_pretrained(ctx.out_dir / "scenario_backbone")
        rows[ROW_NAMES["backbone"]] = recommend_fn_for(model, split, k, exclude_history)
    if ctx.config.get("llm4msr"):
        extract, encode, train = llm4msr_sections(ctx.config["llm4msr"])
        extract.setdefault("cache_file", str(ctx.run_dir / "llm4msr_answers.cache.jsonl"))
        (extract_cfg,) = parse_config([ScenarioExtractConfig], [], config={
            **extract, "split_dir": str(ctx.upstream("data") / "split"), "out_dir": str(ctx.out_dir / "llm4msr_extract")},
            config_source="section 'evaluate.llm4msr'")
        cost = run_scenario_extract(extract_cfg)
        logger.info("LLM4MSR knowledge cost: %s", cost["total"])
        vectors = ctx.out_dir / "llm4msr_vectors"
        run_encode(EncodeConfig(knowledge_dir=extract_cfg.out_dir, out_dir=str(vectors), **encode))
        model = train_scenario_model("llm4msr", split, sasrec_cfg, vectors, log_file=ctx.out_dir / "llm4msr_metrics.jsonl",
                                     **train)
        model.save_pretrained(ctx.out_dir / "llm4msr")
        rows[ROW_NAMES["llm4msr"]] = recommend_fn_for(model, split, k, exclude_history)
    return rows
