"""``alignrec embed`` (item vectors to a folder) and ``alignrec sasrec`` (train + evaluate the CF baseline).

    alignrec embed --split_dir runs/data/scientific --output_dir runs/emb/scientific --source fused
    alignrec sasrec --split_dir runs/data/scientific --output_dir runs/sasrec/scientific [--config sasrec.yaml]
    alignrec learn --split_dir runs/data/scientific --output_dir runs/learn/scientific     (learn_cli.py)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from recdata.config import config_to_dict, parse_config
from recdata.errors import InputFileError

logger = logging.getLogger(__name__)


@dataclass
class EmbedArgs:
    split_dir: str = field(metadata={"help": "Split dataset folder written by `alignrec data prepare`."})
    output_dir: str = field(metadata={"help": "Folder for vectors.npy, item_ids.json, meta.json, resolved_config.json."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into an existing non-empty folder that alignrec did not write (its other files are kept)."})


def register(subparsers) -> None:
    p = subparsers.add_parser("embed", help="Item embeddings (text / SASRec CF / LEARN / fused / file) to a folder.",
                              add_help=False)
    p.set_defaults(handler=_run_embed)
    p = subparsers.add_parser("sasrec", help="Train the SASRec CF baseline; save it with valid/test metrics.",
                              add_help=False)
    p.set_defaults(handler=_run_sasrec)
    from tokenization.embeddings.learn_cli import register as register_learn

    register_learn(subparsers)


def _load_split(split_dir: str):
    from recdata.split import SplitDataset

    if not Path(split_dir).is_dir():
        raise InputFileError(f"--split_dir {split_dir} does not exist; create it with `alignrec data prepare`")
    return SplitDataset.load(split_dir)


def _run_embed(args, argv: list[str]) -> int:
    import numpy as np

    from recdata.io import atomic_write_json
    from recdata.outputs import check_not_overlapping, staged_output_dir
    from tokenization.embeddings import EmbeddingConfig, compute_item_embeddings

    run, cfg = parse_config([EmbedArgs, EmbeddingConfig], argv)
    inputs = [run.split_dir, cfg.file_path, cfg.file_ids_path, cfg.sentence_encoder_dir, cfg.llm_dir]
    check_not_overlapping(run.output_dir, inputs, "embed")
    emb = compute_item_embeddings(cfg, _load_split(run.split_dir))
    with staged_output_dir(run.output_dir, "embed", inputs=inputs, overwrite=run.overwrite) as tmp:
        np.save(tmp / "vectors.npy", emb.vectors)
        atomic_write_json(tmp / "item_ids.json", emb.item_ids, indent=None)
        atomic_write_json(tmp / "resolved_config.json", config_to_dict(run, cfg))
        atomic_write_json(tmp / "meta.json", json.loads(json.dumps(emb.meta, default=str)))
    print(json.dumps({"output_dir": run.output_dir, "items": len(emb.item_ids), "dim": emb.dim}))
    return 0


def _run_sasrec(args, argv: list[str]) -> int:
    from alignrec.recommenders import SASRecConfig, full_ranking_metrics, train_sasrec
    from recdata.io import atomic_write_json
    from recdata.outputs import claim_output_dir

    run, cfg = parse_config([EmbedArgs, SASRecConfig], argv)
    split = _load_split(run.split_dir)
    out = claim_output_dir(run.output_dir, "sasrec", inputs=[run.split_dir], overwrite=run.overwrite)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    model = train_sasrec(split, cfg, log_file=out / "metrics.jsonl")
    result = dict(model.train_info)
    for part in ("valid", "test"):
        examples = split.eval_examples(part)
        for k in (10, 20):
            metrics = full_ranking_metrics(model, list(examples["history"]), list(examples["target"]), k=k)
            result.update({f"{part}_{name}": value for name, value in metrics.items()})
    model.save_pretrained(out / "model")
    atomic_write_json(out / "resolved_config.json", config_to_dict(run, cfg))
    atomic_write_json(out / "results.json", result)
    print(json.dumps(result, indent=2))
    return 0
