"""The eight stages of ``alignrec run``, each a thin call into its stage library.

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
from dataclasses import fields
from pathlib import Path
from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from recdata.config import parse_config

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


# Keys a section may hold that the pipeline itself consumes (not the stage's own config).
PIPELINE_ONLY_KEYS = {"embeddings": ("sasrec_baseline",), "train": ("launcher", "num_gpus", "deepspeed"),
                      "evaluate": ("sasrec_bce_baseline",)}


def _check_injected(stage: str, section: dict[str, Any], injected: Any, source: str = "run config") -> None:
    clash = sorted(set(section) & set(injected))
    if clash:
        raise ValueError(f"{source}: section {stage!r} sets {clash}, which the pipeline fills itself; remove them")


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


def _source_identity(path: str) -> dict[str, Any]:
    """Sizes and mtimes of the input files: a changed source file re-runs the data stage."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return {str(p.relative_to(root) if p != root else p.name): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def run_data(ctx: StageContext) -> dict[str, Any]:
    from recdata.cli import run_prepare

    cfg, prep = _build(_data_classes(), ctx.config, {"output_dir": str(ctx.out_dir / "split")}, "data")
    stats = run_prepare(cfg, prep)
    return {"users": stats["users"], "items": stats["items"], "interactions": stats["interactions"],
            "split": stats["split"], "drops": stats["drops"]}


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
    (cfg,) = _build(_embedding_classes(), ctx.config, {}, "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    sasrec = None
    summary: dict[str, Any] = {"source": cfg.source}
    if baseline or cfg.source in ("cf", "fused"):
        sasrec = train_sasrec(split, cfg.sasrec_config(), log_file=ctx.out_dir / "sasrec_metrics.jsonl")
        sasrec.save_pretrained(ctx.out_dir / "sasrec")
        valid = split.eval_examples("valid")
        summary["sasrec_valid"] = full_ranking_metrics(sasrec, list(valid["history"]), list(valid["target"]), k=10)
    emb = compute_item_embeddings(cfg, split, sasrec=sasrec)
    np.save(ctx.out_dir / "vectors.npy", emb.vectors)
    atomic_write_json(ctx.out_dir / "item_ids.json", list(emb.item_ids), indent=None)
    atomic_write_json(ctx.out_dir / "meta.json", json.loads(json.dumps(emb.meta, default=str)))
    summary.update({"items": len(emb.item_ids), "dim": int(emb.vectors.shape[1])})
    return summary


def load_stage_embeddings(stage_dir: Path):
    import numpy as np

    from tokenization.embeddings import ItemEmbeddings

    ids = json.loads((stage_dir / "item_ids.json").read_text())
    meta = json.loads((stage_dir / "meta.json").read_text())
    return ItemEmbeddings(ids, np.load(stage_dir / "vectors.npy"), meta)


# ---- tokenizer ---------------------------------------------------------------------------------------------
def _tokenizer_classes():
    from tokenization.config import TokenizerConfig

    return [TokenizerConfig]


def run_tokenizer(ctx: StageContext) -> dict[str, Any]:
    from recdata import SplitDataset
    from tokenization.pipeline import build_item_tokenizer

    (cfg,) = _build(_tokenizer_classes(), ctx.config, {}, "tokenizer")
    (emb_cfg,) = _build(_embedding_classes(), ctx.run_config.sections.get("embeddings", {}), {}, "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    embeddings = load_stage_embeddings(ctx.upstream("embeddings"))
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
def run_train(ctx: StageContext) -> dict[str, Any]:
    import yaml

    launcher = ctx.config.get("launcher", "deepspeed")
    num_gpus = int(ctx.config.get("num_gpus", 0) or 0)
    ds_config = ctx.config.get("deepspeed")
    section = _stage_keys("train", ctx.config)
    injected = {
        "dataset_dir": str(ctx.upstream("tasks") / "dataset"),
        "item_tokenizer_dir": str(ctx.upstream("tokenizer") / "item_tokenizer"),
        "output_dir": str(ctx.out_dir / "model"),
    }
    _check_injected("train", section, injected)
    config_file = ctx.out_dir / "train_config.yaml"
    config_file.write_text(yaml.safe_dump({**section, **injected}, sort_keys=True))
    args = ["--config", str(config_file)]
    if ds_config:
        ds_path = Path(ds_config)
        args += ["--deepspeed", str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)]
    if any((ctx.out_dir / "model").glob("checkpoint-*")):
        logger.info("resuming training from the last checkpoint in %s", ctx.out_dir / "model")
        args += ["--resume_from_checkpoint", "last"]
    from trainer.cli import build_command
    from trainer.config import parse_train_config

    parse_train_config(["--config", str(config_file)])  # fail on a typo here, before a launcher starts
    cmd = build_command(launcher, num_gpus, args)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    logger.info("launching training: %s", " ".join(cmd))
    started = time.time()
    code = subprocess.call(cmd, env=env, cwd=str(REPO_ROOT))
    if code != 0:
        raise RuntimeError(f"training exited with status {code}; see the log above (command: {' '.join(cmd)})")
    summary: dict[str, Any] = {"launcher": launcher, "seconds": time.time() - started, "command": cmd}
    metrics_file = ctx.out_dir / "model" / "metrics.jsonl"
    if metrics_file.is_file():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        losses = [r["loss"] for r in rows if "loss" in r]
        evals = [r[k] for r in rows for k in ("eval_seqrec_loss", "eval_loss") if k in r]
        summary.update({"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                        "last_eval_loss": evals[-1] if evals else None})
    return summary


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


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    from alignrec.recommenders import SASRec, as_recommend_fn
    from inference.cli import run_evaluate as evaluate

    injected = {"model_dir": str(ctx.upstream("train") / "model"), "split_dir": str(ctx.upstream("data") / "split"),
                "out_dir": str(ctx.out_dir)}
    (cfg,) = _build(_evaluate_classes(), ctx.config, injected, "evaluate")
    extra = {}
    sasrec_dir = ctx.upstream("embeddings") / "sasrec"
    if sasrec_dir.is_dir():
        from recdata import SplitDataset

        split = SplitDataset.load(cfg.split_dir)  # with scenarios, SASRec is also ranked within each scenario
        extra["sasrec"] = as_recommend_fn(SASRec.from_pretrained(sasrec_dir), k=max(cfg.ks),
                                          exclude_history=cfg.exclude_history,
                                          scenario_items=split.scenario_catalogues() if split.has_scenarios else None)
    if ctx.config.get("sasrec_bce_baseline", False):
        extra["sasrec_bce"] = as_recommend_fn(_bce_sasrec(ctx), k=max(cfg.ks), exclude_history=cfg.exclude_history)
    reports = evaluate(cfg, extra_recommenders=extra)
    return {name: {"n": rep["n_examples"], **{k: rep["overall"][k] for k in ("recall@10", "ndcg@10") if k in rep["overall"]},
                   "invalid_rate": rep["invalid_rate"], "timing": rep.get("timing")}
            for name, rep in reports.items()}


# ---- cache -------------------------------------------------------------------------------------------------
def _cache_classes():
    from inference.cache.cli import CacheBuildConfig

    return [CacheBuildConfig]


def run_cache(ctx: StageContext) -> dict[str, Any]:
    from inference.cache import CacheReader
    from inference.cache.cli import CachePublishConfig, run_build, run_publish
    from recdata import SplitDataset

    split_dir = str(ctx.upstream("data") / "split")
    injected = {"split_dir": split_dir, "out_dir": str(ctx.out_dir / "build"),
                "model_dir": str(ctx.upstream("train") / "model")}
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
        raise ValueError(f"run config section 'export' takes no keys yet, got {sorted(ctx.config)}")
    model_dir = ctx.upstream("train") / "model"
    item_tokenizer = ItemTokenizer.from_pretrained(model_dir / "item_tokenizer")
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = ctx.out_dir / "vocab"
    export_vocab(item_tokenizer, out, hf_tokenizer=hf_tokenizer,
                 aligned_with={"model_dir": str(model_dir), "tokenizer": type(hf_tokenizer).__name__})
    from recdata import SplitDataset

    report = validate_vocab(out, expected_item_ids=SplitDataset.load(ctx.upstream("data") / "split").dataset.item_ids())
    return {"vocab_dir": str(out), "validation": report}


STAGES: list[Stage] = [
    Stage("data", run_data, (),
          extra_key=lambda section, run_cfg: {"source_files": _source_identity(section.get("path", ""))}),
    # version 2: SASRec model selection masks history items (as evaluation does)
    Stage("embeddings", run_embeddings, ("data",), version=2),
    Stage("tokenizer", run_tokenizer, ("data", "embeddings")),
    # version 2: validation rows carry user_id / history / target (ranking validation)
    Stage("tasks", run_tasks, ("data", "tokenizer"), version=2,
          extra_key=lambda section, run_cfg: {"hf_tokenizer": train_model_dir(run_cfg)}),
    Stage("train", run_train, ("tasks", "tokenizer")),
    # version 2: exclude_history true and num_beams auto (1.5 x max K) by default; per-user metrics saved
    Stage("evaluate", run_evaluate, ("data", "train", "embeddings"), version=2),
    Stage("cache", run_cache, ("data", "train")),
    Stage("export", run_export, ("data", "train")),
]


# ---- up-front validation -------------------------------------------------------------------------------------
INJECTED_KEYS = {
    "data": ("output_dir",),
    "tasks": TASK_INJECTED,
    "train": ("dataset_dir", "item_tokenizer_dir", "output_dir"),
    "evaluate": ("model_dir", "split_dir", "out_dir"),
    "cache": ("split_dir", "out_dir", "model_dir"),
}
SECTION_CLASSES = {"data": _data_classes, "embeddings": _embedding_classes, "tokenizer": _tokenizer_classes,
                   "tasks": _task_classes, "evaluate": _evaluate_classes, "cache": _cache_classes}


def validate_sections(sections: dict[str, dict[str, Any]], source: str) -> None:
    """Check every section's keys (and values, where no GPU is needed to check them) before any stage runs."""
    for stage, section in sections.items():
        injected = INJECTED_KEYS.get(stage, ())
        body = _stage_keys(stage, section)
        _check_injected(stage, body, injected, source)
        if stage == "train":
            from trl import SFTConfig

            from trainer.config import AlignRecTrainArguments, DataArguments, ModelArguments

            known = {f.name for cls in (ModelArguments, DataArguments, AlignRecTrainArguments, SFTConfig) for f in fields(cls)}
            unknown = sorted(set(body) - known)
            if unknown:
                raise ValueError(f"{source}: unknown key(s) {unknown} in section 'train'; see `python trainer/sft.py --help`")
        elif stage == "export":
            if body:
                raise ValueError(f"{source}: section 'export' takes no keys, got {sorted(body)}")
        elif stage in SECTION_CLASSES:
            placeholders = {k: "placeholder" for k in injected}
            parse_config(SECTION_CLASSES[stage](), [], config={**body, **placeholders}, config_source=f"{source} [{stage}]")
