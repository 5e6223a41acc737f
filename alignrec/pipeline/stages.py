"""The stages of ``alignrec run`` (``preference`` is optional), each a thin call into its stage library.

Every stage reads its section of the run config with the same dataclasses as its own subcommand; the keys
that connect stages (``split_dir``, ``output_dir``, ...) are filled here from the run folder, and a user
value for one of them is an error (it would silently point a stage at another run's artefacts).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from recdata.config import parse_config
from recdata.errors import ConfigError, UserError

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


# Keys a section may hold that the pipeline itself consumes (not the stage's own config).
PIPELINE_ONLY_KEYS = {"embeddings": ("sasrec_baseline", "sasrec_knowledge", "learn_baseline"),
                      "train": ("launcher", "num_gpus", "deepspeed"),
                      "evaluate": ("sasrec_bce_baseline", "scenario_backbone", "llm4msr"),
                      "knowledge": ("encoder", "encoder_dir"), "tasks": ("use_knowledge",),
                      "preference": ("enabled", "pairs", "launcher", "num_gpus", "deepspeed")}


def _check_injected(stage: str, section: dict[str, Any], injected: Any, source: str = "run config") -> None:
    clash = sorted(set(section) & set(injected))
    if clash:
        raise ConfigError(f"{source}: section {stage!r} sets {clash}, which the pipeline fills itself; remove them")


def _stage_keys(stage: str, section: dict[str, Any]) -> dict[str, Any]:
    """The section without the pipeline-only keys: what the stage's own config dataclasses receive."""
    return {k: v for k, v in section.items() if k not in PIPELINE_ONLY_KEYS.get(stage, ())}


def _build(classes: list[type], section: dict[str, Any], injected: dict[str, Any], stage: str) -> tuple[Any, ...]:
    body = _stage_keys(stage, section)
    _check_injected(stage, body, injected)
    return parse_config(classes, [], config={**body, **injected}, config_source=f"section {stage!r}")


# ---- data -----------------------------------------------------------------------------------------------
def _data_classes():
    from recdata.cli import PrepareArgs
    from recdata.prepare import DataConfig

    return [DataConfig, PrepareArgs]


def _data_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The source files of the data stage (their content enters its key, see ``recdata.fingerprint``)."""
    return {"path": section.get("path", ""), "item_path": section.get("item_path", "")}


def _embedding_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """User vectors and the text encoder folder the embeddings stage reads."""
    from recdata.paths import default_llm_dir, default_sentence_encoder_dir

    source = section.get("source", "text")
    fusion = str(section.get("fusion_weights", "text=1.0,cf=1.0"))
    out = {"file_path": section.get("file_path", ""), "file_ids_path": section.get("file_ids_path", "")}
    if source == "text" or (source == "fused" and "text" in fusion):
        if section.get("text_encoder", "sentence") == "sentence":
            out["text_encoder"] = str(section.get("sentence_encoder_dir") or default_sentence_encoder_dir())
        else:
            out["text_encoder"] = str(section.get("llm_dir") or default_llm_dir())
    return out


def _tokenizer_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The LLM whose input embeddings are the alignment targets (when align_weight > 0)."""
    from recdata.paths import default_llm_dir

    if float(section.get("align_weight", 0.5) or 0) <= 0:
        return {}
    return {"alignment_llm": str(run_cfg.sections.get("embeddings", {}).get("llm_dir") or default_llm_dir())}


def _tasks_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    from recdata.hf_tokenizer import CODES_ONLY

    hf = train_model_dir(run_cfg)
    return {"query_file": section.get("query_file", ""), "hf_tokenizer": "" if hf == CODES_ONLY else hf}


def _train_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The base model and tokenizer folders and the DeepSpeed JSON (content, not path, enters the key)."""
    from recdata.hf_tokenizer import CODES_ONLY
    from recdata.paths import default_llm_dir

    out: dict[str, str] = {}
    if section.get("model_init", "pretrained") != "scratch":
        out["model"] = str(section.get("model_name_or_path") or default_llm_dir())
    tokenizer = str(section.get("tokenizer_name_or_path") or "")
    if tokenizer and tokenizer != CODES_ONLY:
        out["tokenizer"] = tokenizer
    if section.get("deepspeed"):
        ds_path = Path(section["deepspeed"])
        out["deepspeed"] = str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)
    return out


def run_data(ctx: StageContext) -> dict[str, Any]:
    from recdata.cli import run_prepare

    cfg, prep = _build(_data_classes(), ctx.config, {"output_dir": str(ctx.out_dir / "split")}, "data")
    stats = run_prepare(cfg, prep)
    return {"users": stats["users"], "items": stats["items"], "interactions": stats["interactions"],
            "split": stats["split"], "drops": stats["drops"]}


# ---- knowledge (optional: REKI extraction + encoding; an empty section skips it) -----------------------------
def _knowledge_classes():
    from alignrec.knowledge import ExtractConfig

    return [ExtractConfig]


def run_knowledge(ctx: StageContext) -> dict[str, Any]:
    if not ctx.config:
        return {"enabled": False}
    from alignrec.knowledge import EncodeConfig
    from alignrec.knowledge.cli import run_encode, run_extract

    injected = {"split_dir": str(ctx.upstream("data") / "split"), "out_dir": str(ctx.out_dir / "extract")}
    if "cache_file" not in ctx.config:  # outside the stage folder: a changed config re-asks only new prompts
        injected["cache_file"] = str(ctx.run_dir / "knowledge_answers.cache.jsonl")
    (cfg,) = _build(_knowledge_classes(), ctx.config, injected, "knowledge")
    cost = run_extract(cfg)
    encoded = run_encode(EncodeConfig(knowledge_dir=cfg.out_dir, out_dir=str(ctx.out_dir / "vectors"),
                                      encoder=ctx.config.get("encoder", "sentence"),
                                      encoder_dir=ctx.config.get("encoder_dir", "")))
    return {"enabled": True, "mode": cfg.mode, "cost": cost, "encoded": encoded}


def _knowledge_vectors(ctx: StageContext) -> Path | None:
    path = ctx.upstream("knowledge") / "vectors"
    return path if (path / "item_vectors.safetensors").is_file() else None


def _embedding_injected(ctx: StageContext, section: dict[str, Any]) -> dict[str, Any]:
    """``knowledge_dir`` = this run's knowledge vectors, unless the section names its own."""
    knowledge = _knowledge_vectors(ctx)
    return {"knowledge_dir": str(knowledge)} if knowledge and "knowledge_dir" not in section else {}


def _uses_knowledge(section: dict[str, Any]) -> bool:
    """An embeddings section that reads the knowledge stage (source or fusion part, or the knowledge SASRec)."""
    if section.get("sasrec_knowledge"):
        sasrec_knowledge_kinds(section["sasrec_knowledge"])  # a bad value fails before any stage runs
    return section.get("source") == "knowledge" or "knowledge" in str(section.get("fusion_weights", "")) \
        or bool(section.get("sasrec_knowledge"))


def _knowledge_key(section: dict[str, Any], run_cfg: Any) -> dict[str, Any]:
    """The knowledge section joins the key only of stages that read it, so other runs keep their keys."""
    return {"knowledge": run_cfg.sections.get("knowledge", {})} if _uses_knowledge(section) else {}


# ---- embeddings (+ the SASRec baseline) -------------------------------------------------------------------
def _embedding_classes():
    from tokenization.embeddings import EmbeddingConfig

    return [EmbeddingConfig]


def run_embeddings(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    from alignrec.recommenders import full_ranking_metrics, train_sasrec
    from recdata import SplitDataset, atomic_write_json
    from tokenization.embeddings import compute_item_embeddings

    baseline = bool(ctx.config.get("sasrec_baseline", True))
    (cfg,) = _build(_embedding_classes(), ctx.config, _embedding_injected(ctx, ctx.config), "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    sasrec = None
    summary: dict[str, Any] = {"source": cfg.source}
    if baseline or cfg.source in ("cf", "fused"):
        sasrec = train_sasrec(split, cfg.sasrec_config(), log_file=ctx.out_dir / "sasrec_metrics.jsonl")
        sasrec.save_pretrained(ctx.out_dir / "sasrec")
        valid = split.eval_examples("valid")
        summary["sasrec_valid"] = full_ranking_metrics(sasrec, list(valid["history"]), list(valid["target"]), k=10)
    if ctx.config.get("sasrec_knowledge"):
        summary["sasrec_knowledge_valid"] = _train_knowledge_sasrec(ctx, cfg, split)
    learn = _train_learn_stage(ctx, cfg, split, summary)
    emb = compute_item_embeddings(cfg, split, sasrec=sasrec, learn=learn)
    np.save(ctx.out_dir / "vectors.npy", emb.vectors)
    atomic_write_json(ctx.out_dir / "item_ids.json", list(emb.item_ids), indent=None)
    atomic_write_json(ctx.out_dir / "meta.json", json.loads(json.dumps(emb.meta, default=str)))
    summary.update({"items": len(emb.item_ids), "dim": int(emb.vectors.shape[1])})
    return summary


def sasrec_knowledge_kinds(value: Any) -> tuple[str, ...]:
    """``embeddings.sasrec_knowledge``: true (item knowledge, the measured default) or the kinds, e.g. "item,user"."""
    if value is True:
        return ("item",)
    kinds = tuple(k.strip() for k in str(value).split(",") if k.strip())
    if not kinds or set(kinds) - {"item", "user"}:
        raise ConfigError(f"embeddings.sasrec_knowledge must be true or name item and/or user, got {value!r}")
    return kinds


def _train_knowledge_sasrec(ctx: StageContext, cfg: Any, split: Any) -> dict[str, float]:
    """"SASRec + knowledge" with the baseline's SASRec config, saved with its prestored vectors."""
    from alignrec.knowledge.train import knowledge_sasrec_from_vectors
    from alignrec.recommenders import full_ranking_metrics, train_sasrec

    if not cfg.knowledge_dir:
        raise ValueError("embeddings.sasrec_knowledge needs knowledge vectors: fill the 'knowledge' section "
                         "(or set embeddings.knowledge_dir)")
    model = knowledge_sasrec_from_vectors(cfg.knowledge_dir, split.dataset.item_ids(), cfg.sasrec_config(),
                                          sasrec_knowledge_kinds(ctx.config.get("sasrec_knowledge")))
    train_sasrec(split, cfg.sasrec_config(), log_file=ctx.out_dir / "sasrec_knowledge_metrics.jsonl", model=model)
    model.save_pretrained(ctx.out_dir / "sasrec_knowledge")
    valid = split.eval_examples("valid")
    return full_ranking_metrics(model, list(valid["history"]), list(valid["target"]), k=10,
                                **model.context_for(list(valid["user_id"])))


def _train_learn_stage(ctx: StageContext, cfg: Any, split: Any, summary: dict[str, Any]):
    """LEARN towers when ``source`` uses them or ``learn_baseline: true`` (the LEARN evaluation row); resumable."""
    from alignrec.recommenders import full_ranking_metrics, train_learn
    from tokenization.embeddings import text_embeddings

    uses = cfg.source == "learn" or (cfg.source == "fused" and "learn" in cfg.fusion_weight_map())
    if not (uses or bool(ctx.config.get("learn_baseline", False))):
        return None
    learn = train_learn(split, cfg.learn_config(), text_embeddings(cfg, split).vectors,
                        log_file=ctx.out_dir / "learn_metrics.jsonl", checkpoint_path=ctx.out_dir / "learn_checkpoint.pt")
    learn.save_pretrained(ctx.out_dir / "learn")
    valid = split.eval_examples("valid")
    summary["learn_valid"] = full_ranking_metrics(learn, list(valid["history"]), list(valid["target"]), k=10)
    return learn


# ---- tokenizer ---------------------------------------------------------------------------------------------
def _tokenizer_classes():
    from tokenization.config import TokenizerConfig

    return [TokenizerConfig]


def run_tokenizer(ctx: StageContext) -> dict[str, Any]:
    from recdata import SplitDataset
    from tokenization.embeddings import load_embeddings_dir
    from tokenization.pipeline import build_item_tokenizer

    (cfg,) = _build(_tokenizer_classes(), ctx.config, {}, "tokenizer")
    emb_section = ctx.run_config.sections.get("embeddings", {})
    (emb_cfg,) = _build(_embedding_classes(), emb_section, _embedding_injected(ctx, emb_section), "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    embeddings = load_embeddings_dir(ctx.upstream("embeddings"))
    build_item_tokenizer(cfg, split, ctx.out_dir / "item_tokenizer", emb_cfg, embeddings=embeddings)
    report = json.loads((ctx.out_dir / "item_tokenizer" / "report.json").read_text())
    levels = report.get("levels") or []
    return {"num_items": report.get("num_items"), "codebook_sizes": report.get("codebook_sizes"),
            "usage_percent": [round(lv["usage_pct"], 1) for lv in levels],
            "perplexity": [round(lv["perplexity"], 1) for lv in levels],
            "collisions_before": report.get("collisions_before"), "collisions_after": report.get("collisions_after"),
            "items_moved": report.get("items_moved"), "disambiguation_level": report.get("disambiguation_level"),
            "recon_mse": report.get("recon_mse"), "recon_relative": report.get("recon_relative")}


# ---- tasks -------------------------------------------------------------------------------------------------
def _task_classes():
    from sft_tasks.config import TaskConfig

    return [TaskConfig]


TASK_INJECTED = ("split_dir", "item_tokenizer_dir", "output_dir", "hf_tokenizer_dir")


def run_tasks(ctx: StageContext) -> dict[str, Any]:
    from sft_tasks.cli import run_build

    injected = {
        "split_dir": str(ctx.upstream("data") / "split"),
        "item_tokenizer_dir": str(ctx.upstream("tokenizer") / "item_tokenizer"),
        "output_dir": str(ctx.out_dir / "dataset"),
        "hf_tokenizer_dir": train_model_dir(ctx.run_config),
    }
    if ctx.config.get("use_knowledge"):
        injected["user_knowledge_dir"] = str(ctx.upstream("knowledge") / "extract")
    (cfg,) = _build(_task_classes(), ctx.config, injected, "tasks")
    stats = run_build(cfg)
    train = stats["train"]
    return {"train_examples": train["total"]["count"], "validation_examples": stats["validation"]["total"]["count"],
            "per_task": {t: v["count"] for t, v in train.items() if t != "total"}}


def train_model_dir(run_cfg: Any) -> str:
    """The model whose tokenizer the tasks are tokenised with: the training model or its tokenizer."""
    from recdata.paths import default_llm_dir

    section = run_cfg.sections.get("train", {})
    return str(section.get("tokenizer_name_or_path") or section.get("model_name_or_path") or default_llm_dir())


# ---- train -------------------------------------------------------------------------------------------------
def launch_trainer(ctx: StageContext, stage: str, section: dict[str, Any], injected: dict[str, Any],
                   config_name: str, validate: Any, launcher: str, num_gpus: int, ds_config: str | None,
                   entry: Path | None = None) -> tuple[list[str], float, Path]:
    """Write the stage's trainer YAML, check it, launch the entry (resuming from its last checkpoint).

    One launch path for every training stage (SFT ``train``, DPO ``preference``): returns (command, seconds,
    config file). ``validate(argv)`` parses the config so a typo fails before a launcher starts.
    """
    import yaml

    from trainer.cli import build_command

    _check_injected(stage, section, injected)
    config_file = ctx.out_dir / config_name
    config_file.write_text(yaml.safe_dump({**section, **injected}, sort_keys=True))
    args = ["--config", str(config_file)]
    if ds_config:
        ds_path = Path(ds_config)
        args += ["--deepspeed", str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)]
    if any((Path(injected["output_dir"])).glob("checkpoint-*")):
        logger.info("%s: resuming from the last checkpoint in %s", stage, injected["output_dir"])
        args += ["--resume_from_checkpoint", "last"]
    validate(["--config", str(config_file)])
    cmd = build_command(launcher, num_gpus, args, **({"entry": entry} if entry else {}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    logger.info("launching %s: %s", stage, " ".join(cmd))
    started = time.time()
    code = subprocess.call(cmd, env=env, cwd=str(REPO_ROOT))
    if code != 0:
        raise UserError(f"{stage} training exited with status {code}; see the log above (command: {' '.join(cmd)})")
    return cmd, time.time() - started, config_file


def run_train(ctx: StageContext) -> dict[str, Any]:
    launcher = ctx.config.get("launcher", "deepspeed")
    num_gpus = int(ctx.config.get("num_gpus", 0) or 0)
    ds_config = ctx.config.get("deepspeed")
    section = _stage_keys("train", ctx.config)
    injected = {
        "dataset_dir": str(ctx.upstream("tasks") / "dataset"),
        "item_tokenizer_dir": str(ctx.upstream("tokenizer") / "item_tokenizer"),
        "output_dir": str(ctx.out_dir / "model"),
    }
    if section.get("new_rows_init") == "item_vectors":  # the vectors the tokenizer read (in its key already)
        injected["item_vectors_dir"] = str(ctx.upstream("embeddings"))
    from trainer.config import parse_train_config

    cmd, seconds, _ = launch_trainer(ctx, "train", section, injected, "train_config.yaml", parse_train_config,
                                     launcher, num_gpus, ds_config)
    summary: dict[str, Any] = {"launcher": launcher, "seconds": seconds, "command": cmd}
    metrics_file = ctx.out_dir / "model" / "metrics.jsonl"
    if metrics_file.is_file():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        losses = [r["loss"] for r in rows if "loss" in r]
        evals = [r[k] for r in rows for k in ("eval_seqrec_loss", "eval_loss") if k in r]
        summary.update({"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                        "last_eval_loss": evals[-1] if evals else None})
    return summary


# ---- preference (optional: DPO on top of SFT) ---------------------------------------------------------------
PREFERENCE_INJECTED = ("sft_run_dir", "pairs_dir", "output_dir", "ranking_dataset_dir")


def preference_enabled(sections: dict[str, dict[str, Any]]) -> bool:
    """The preference stage runs only with ``preference: {enabled: true, ...}`` in the run config."""
    value = (sections.get("preference") or {}).get("enabled", False)
    if not isinstance(value, bool):
        raise ConfigError(f"section 'preference': enabled must be true or false, got {value!r}")
    return value


def _preference_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The DeepSpeed JSON DPO runs with (its own or the train section's): its content enters the key.

    The base model and tokenizer reach DPO through the SFT run (the train stage's key covers their content).
    """
    ds_config = section.get("deepspeed", run_cfg.sections.get("train", {}).get("deepspeed"))
    if not ds_config:
        return {}
    ds_path = Path(ds_config)
    return {"deepspeed": str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)}


def served_model_dir(ctx: StageContext) -> Path:
    """The model evaluate, cache and export read: the DPO model when the preference stage is on, else SFT's."""
    if preference_enabled(ctx.run_config.sections):
        return ctx.upstream("preference") / "model"
    return ctx.upstream("train") / "model"


def run_preference(ctx: StageContext) -> dict[str, Any]:
    from alignrec.pipeline.preference_stage import run_preference_stage

    return run_preference_stage(ctx)


# ---- evaluate ----------------------------------------------------------------------------------------------
def _evaluate_classes():
    from inference.cli import EvaluateConfig

    return [EvaluateConfig]


def _bce_sasrec(ctx: StageContext):
    """The BCE-loss SASRec (one sampled negative per position) that generative-recommendation papers report:
    the embeddings section's SASRec hyper-parameters with ``sasrec_loss: bce``, trained here so adding the row
    re-runs only this stage."""
    import dataclasses

    from alignrec.recommenders import train_sasrec
    from recdata import SplitDataset

    (emb_cfg,) = _build(_embedding_classes(), ctx.run_config.sections.get("embeddings", {}), {}, "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    model = train_sasrec(split, dataclasses.replace(emb_cfg.sasrec_config(), sasrec_loss="bce"),
                         log_file=ctx.out_dir / "sasrec_bce_metrics.jsonl")
    model.save_pretrained(ctx.out_dir / "sasrec_bce")
    return model


SFT_ROW = "alignrec_sft"  # with the preference stage on, "alignrec" is SFT+DPO and this row the SFT model alone


def _sft_recommender(model_dir: Path, cfg: Any):
    from inference.popularity import train_popularity
    from inference.trained_run import TrainedRun
    from recdata import SplitDataset

    counts = train_popularity(SplitDataset.load(cfg.split_dir)) if cfg.popularity_penalty else None
    return TrainedRun.load(model_dir, device=cfg.device).recommender(
        max(cfg.ks), cfg.num_beams, cfg.exclude_history, cfg.batch_size, popularity_penalty=cfg.popularity_penalty,
        item_counts=counts)


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    from alignrec.recommenders import SASRec, as_recommend_fn
    from inference.cli import run_evaluate as evaluate

    injected = {"model_dir": str(served_model_dir(ctx)), "split_dir": str(ctx.upstream("data") / "split"),
                "out_dir": str(ctx.out_dir)}
    (cfg,) = _build(_evaluate_classes(), ctx.config, injected, "evaluate")
    extra = {}
    if preference_enabled(ctx.run_config.sections):  # SFT vs SFT+DPO on the same users, side by side
        extra[SFT_ROW] = _sft_recommender(ctx.upstream("train") / "model", cfg)
    sasrec_dir = ctx.upstream("embeddings") / "sasrec"
    if sasrec_dir.is_dir():
        from recdata import SplitDataset

        split = SplitDataset.load(cfg.split_dir)  # with scenarios, SASRec is also ranked within each scenario
        extra["sasrec"] = as_recommend_fn(SASRec.from_pretrained(sasrec_dir), k=max(cfg.ks),
                                          exclude_history=cfg.exclude_history,
                                          scenario_items=split.scenario_catalogues() if split.has_scenarios else None)
    if ctx.config.get("sasrec_bce_baseline", False):
        extra["sasrec_bce"] = as_recommend_fn(_bce_sasrec(ctx), k=max(cfg.ks), exclude_history=cfg.exclude_history)
    knowledge_dir = ctx.upstream("embeddings") / "sasrec_knowledge"
    if knowledge_dir.is_dir():
        from alignrec.recommenders import KnowledgeSASRec

        knowledge_model = KnowledgeSASRec.from_pretrained(knowledge_dir)
        extra["sasrec+knowledge"] = as_recommend_fn(knowledge_model, k=max(cfg.ks), exclude_history=cfg.exclude_history,
                                                    context_fn=knowledge_model.context_for)
    learn_dir = ctx.upstream("embeddings") / "learn"
    if learn_dir.is_dir():
        from alignrec.recommenders import LEARN

        extra["learn"] = as_recommend_fn(LEARN.from_pretrained(learn_dir), k=max(cfg.ks),
                                         exclude_history=cfg.exclude_history)
    if ctx.config.get("scenario_backbone") or ctx.config.get("llm4msr"):  # multi-scenario rows (LLM4MSR)
        from alignrec.pipeline.scenario_rows import scenario_rows

        extra.update(scenario_rows(ctx, max(cfg.ks), cfg.exclude_history))
    reports = evaluate(cfg, extra_recommenders=extra)
    return {name: {"n": rep["n_examples"], **{k: rep["overall"][k] for k in ("recall@10", "ndcg@10") if k in rep["overall"]},
                   "invalid_rate": rep["invalid_rate"], "timing": rep.get("timing")}
            for name, rep in reports.items()}


def _evaluate_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The LLM and encoder of ``evaluate.llm4msr`` (none without it, so other runs keep their key)."""
    if not section.get("llm4msr"):
        return {}
    from alignrec.pipeline.scenario_rows import llm4msr_inputs

    return llm4msr_inputs(section, run_cfg)


# ---- cache -------------------------------------------------------------------------------------------------
def _cache_classes():
    from inference.cache.cli import CacheBuildConfig

    return [CacheBuildConfig]


def _evaluated_penalty(run_cfg: Any) -> float:
    return float(run_cfg.sections.get("evaluate", {}).get("popularity_penalty", 0.0))


def run_cache(ctx: StageContext) -> dict[str, Any]:
    from inference.cache import CacheReader
    from inference.cache.cli import CachePublishConfig, run_build, run_publish
    from recdata import SplitDataset

    split_dir = str(ctx.upstream("data") / "split")
    injected = {"split_dir": split_dir, "out_dir": str(ctx.out_dir / "build"),
                "model_dir": str(served_model_dir(ctx))}
    if "popularity_penalty" not in ctx.config:  # serve what was evaluated: the evaluate section's decoding
        injected["popularity_penalty"] = _evaluated_penalty(ctx.run_config)
    (cfg,) = _build(_cache_classes(), ctx.config, injected, "cache")
    started = time.time()
    manifest = run_build(cfg)
    build_seconds = time.time() - started
    if manifest is None:
        raise RuntimeError("cache build finished without a manifest (some shard is missing)")
    store = run_publish(CachePublishConfig(cache_dir=cfg.out_dir, store_dir=str(ctx.out_dir / "store"),
                                           split_dir=split_dir))
    users = sorted(SplitDataset.load(split_dir).serving_histories())
    with CacheReader(ctx.out_dir / "store") as reader:
        lookups = time.perf_counter()
        results = [reader.get(u) for u in users]
        lookup_seconds = time.perf_counter() - lookups
    missing = [r.user_id for r in results if r.fallback]
    if missing:
        raise RuntimeError(f"{len(missing)} user(s) missing from the published cache, e.g. {missing[0]!r}")
    return {"users": len(users), "k": cfg.k, "build_seconds": build_seconds,
            "users_per_second": len(users) / build_seconds if build_seconds else None,
            "lookup_mean_us": 1e6 * lookup_seconds / max(1, len(users)), "store": str(store)}


# ---- export ------------------------------------------------------------------------------------------------
def run_export(ctx: StageContext) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from tokenization import ItemTokenizer
    from tokenization.vocab_export import export_vocab, validate_vocab

    if ctx.config:
        raise UserError(f"run config section 'export' takes no keys yet, got {sorted(ctx.config)}")
    model_dir = served_model_dir(ctx)
    item_tokenizer = ItemTokenizer.from_pretrained(model_dir / "item_tokenizer")
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = ctx.out_dir / "vocab"
    export_vocab(item_tokenizer, out, hf_tokenizer=hf_tokenizer,
                 aligned_with={"model_dir": str(model_dir), "tokenizer": type(hf_tokenizer).__name__})
    from recdata import SplitDataset

    report = validate_vocab(out, expected_item_ids=SplitDataset.load(ctx.upstream("data") / "split").dataset.item_ids())
    return {"vocab_dir": str(out), "validation": report}


STAGES: list[Stage] = [
    Stage("data", run_data, (), inputs=_data_inputs),
    Stage("knowledge", run_knowledge, ("data",)),
    # version 2: SASRec model selection masks history items (as evaluation does)
    Stage("embeddings", run_embeddings, ("data",), version=2, inputs=_embedding_inputs, extra_key=_knowledge_key),
    Stage("tokenizer", run_tokenizer, ("data", "embeddings"), inputs=_tokenizer_inputs),
    # version 2: validation rows carry user_id / history / target (ranking validation)
    # knowledge_prompts 2 (runs with use_knowledge only): the build keeps its prompt texts for the model, and
    # the preference pairs carry them too
    Stage("tasks", run_tasks, ("data", "tokenizer"), version=2, inputs=_tasks_inputs,
          extra_key=lambda section, run_cfg: {"hf_tokenizer": train_model_dir(run_cfg),
                                              **({"knowledge": run_cfg.sections.get("knowledge", {}),
                                                  "knowledge_prompts": 2} if section.get("use_knowledge") else {})}),
    Stage("train", run_train, ("tasks", "tokenizer"), inputs=_train_inputs),
    Stage("preference", run_preference, ("data", "tokenizer", "tasks", "train"), inputs=_preference_inputs,
          enabled=lambda section, run_cfg: preference_enabled(run_cfg.sections)),
    # version 2: exclude_history true and num_beams auto (1.5 x max K) by default; per-user metrics saved
    Stage("evaluate", run_evaluate, ("data", "train", "embeddings", "preference"), version=2,
          inputs=_evaluate_inputs),
    Stage("cache", run_cache, ("data", "train", "preference"),
          extra_key=lambda section, run_cfg: ({} if "popularity_penalty" in section or not _evaluated_penalty(run_cfg)
                                              else {"popularity_penalty": _evaluated_penalty(run_cfg)})),
    Stage("export", run_export, ("data", "train", "preference")),
]


# ---- up-front validation -------------------------------------------------------------------------------------
INJECTED_KEYS = {
    "data": ("output_dir",),
    "knowledge": ("split_dir", "out_dir"),
    "tasks": TASK_INJECTED,
    "train": ("dataset_dir", "item_tokenizer_dir", "output_dir", "item_vectors_dir"),
    "preference": PREFERENCE_INJECTED,
    "evaluate": ("model_dir", "split_dir", "out_dir"),
    "cache": ("split_dir", "out_dir", "model_dir"),
}
SECTION_CLASSES = {"data": _data_classes, "knowledge": _knowledge_classes, "embeddings": _embedding_classes, "tokenizer": _tokenizer_classes,
                   "tasks": _task_classes, "evaluate": _evaluate_classes, "cache": _cache_classes}


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
        body = _stage_keys(stage, section)
        _check_injected(stage, body, injected, source)
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
            from alignrec.pipeline.preference_stage import validate_preference_section

            validate_preference_section(section, body, source)
        elif stage == "export":
            if body:
                raise ConfigError(f"{source}: section 'export' takes no keys, got {sorted(body)}")
        elif stage in SECTION_CLASSES:
            placeholders = {k: "placeholder" for k in injected}
            if stage == "embeddings" and _uses_knowledge(section) and "knowledge_dir" not in body:
                if not sections.get("knowledge"):
                    raise ConfigError(f"{source}: section 'embeddings' reads knowledge vectors; fill the "
                                     "'knowledge' section or set embeddings.knowledge_dir")
                placeholders["knowledge_dir"] = "placeholder"
            parse_config(SECTION_CLASSES[stage](), [], config={**body, **placeholders}, config_source=f"{source} [{stage}]")
