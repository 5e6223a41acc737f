"""``alignrec learn``: LEARN twin towers over frozen text vectors; model, item vectors and metrics to a folder.

    alignrec learn --split_dir runs/data/scientific --output_dir runs/learn/scientific \\
        --text_encoder sentence --text_max_length 64 [--learn_dim 64 ...] [--config learn.yaml]

The text vectors (sentence encoder or frozen LLM, ``text_*`` keys) come from the embedding cache. Writes
``model/`` (``LEARN.from_pretrained``), ``vectors.npy`` + ``item_ids.json`` (item tower: an ``alignrec embed``
folder, readable by ``alignrec assign-codes``), ``metrics.jsonl`` (per epoch), ``results.json`` (valid/test
Recall/NDCG@10/20 overall and on the cold slice: targets without training interactions; frozen-encoder
speed; training time) and ``checkpoint.pt``: rerunning an interrupted command resumes from it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recdata.config import config_to_dict, parse_config

logger = logging.getLogger(__name__)


@dataclass
class LearnArgs:
    split_dir: str = field(metadata={"help": "Split dataset folder written by `alignrec data prepare`."})
    output_dir: str = field(metadata={"help": "Folder for model/, vectors.npy, item_ids.json, results.json."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not write."})


def register(subparsers) -> None:
    p = subparsers.add_parser("learn", help="Train LEARN twin towers over frozen text vectors (baseline + item "
                                            "vectors with cold start).", add_help=False)
    p.set_defaults(handler=_run_learn)


def _run_learn(args, argv: list[str]) -> int:
    from tokenization.embeddings.config import EmbeddingConfig

    run, cfg = parse_config([LearnArgs, EmbeddingConfig], argv)
    print(json.dumps(run_learn(run, cfg), indent=2))
    return 0


def ranking_report(model, split, ks=(10, 20)) -> dict[str, Any]:
    """valid/test Recall/NDCG@k, overall and on targets with no training interaction (``cold``)."""
    from alignrec.recommenders import full_ranking_metrics
    from recdata.cold_items import items_without_training

    cold = set(items_without_training(split))
    out: dict[str, Any] = {}
    for part in ("valid", "test"):
        examples = split.eval_examples(part)
        histories, targets = list(examples["history"]), list(examples["target"])
        rows = [i for i, t in enumerate(targets) if t in cold]
        out[f"{part}_cold_examples"] = len(rows)
        for k in ks:
            for name, value in full_ranking_metrics(model, histories, targets, k=k).items():
                out[f"{part}_{name}"] = value
            if rows:
                cold_metrics = full_ranking_metrics(model, [histories[i] for i in rows], [targets[i] for i in rows], k=k)
                out.update({f"{part}_cold_{name}": value for name, value in cold_metrics.items()})
    return out


def run_learn(run: LearnArgs, cfg) -> dict[str, Any]:
    import numpy as np

    from alignrec.recommenders import train_learn
    from recdata.errors import InputFileError
    from recdata.io import atomic_write_json
    from recdata.outputs import claim_output_dir
    from recdata.split import SplitDataset
    from tokenization.embeddings.compute import text_embeddings

    if not Path(run.split_dir).is_dir():
        raise InputFileError(f"--split_dir {run.split_dir} does not exist; create it with `alignrec data prepare`")
    split = SplitDataset.load(run.split_dir)
    out = claim_output_dir(run.output_dir, "learn", inputs=[run.split_dir], overwrite=run.overwrite)
    content = text_embeddings(cfg, split)  # the frozen encoder's vectors, cached
    if not (out / "checkpoint.pt").is_file():
        (out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run: no stale epochs from an older one
    model = train_learn(split, cfg.learn_config(), content.vectors, log_file=out / "metrics.jsonl",
                        checkpoint_path=out / "checkpoint.pt")
    result = {**model.train_info, "encoder": {k: content.meta.get(k) for k in ("kind", "model_dir", "encode")},
              "content_dim": int(content.vectors.shape[1]), **ranking_report(model, split)}
    model.save_pretrained(out / "model")
    np.save(out / "vectors.npy", model.item_embeddings())
    atomic_write_json(out / "item_ids.json", model.item_ids, indent=None)
    atomic_write_json(out / "resolved_config.json", config_to_dict(run, cfg))
    atomic_write_json(out / "results.json", result)
    return result
