"""``alignrec tokenize`` and ``alignrec vocab export|validate``.

    alignrec tokenize --split_dir runs/data/scientific --output_dir runs/tok/scientific [--config tok.yaml]
    alignrec vocab export --tokenizer_dir runs/tok/scientific --output_dir runs/vocab/scientific
    alignrec vocab validate runs/vocab/scientific [--dataset_dir runs/data/scientific]
    alignrec assign-codes --tokenizer_dir T --embeddings_dir E --output_dir T2     (tokenization/assign_cli.py)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from recdata.config import parse_config
from recdata.errors import InputFileError

logger = logging.getLogger(__name__)


@dataclass
class TokenizeArgs:
    split_dir: str = field(metadata={"help": "Split dataset folder written by `alignrec data prepare`."})
    output_dir: str = field(metadata={"help": "Folder for the ItemTokenizer, report.json, code_usage.png."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into an existing non-empty folder that alignrec did not write (its other files are kept)."})


@dataclass
class VocabExportArgs:
    tokenizer_dir: str = field(metadata={"help": "ItemTokenizer folder (output_dir of `alignrec tokenize`)."})
    output_dir: str = field(metadata={"help": "Folder for items.jsonl, items.parquet, tokens.json, manifest.json."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into an existing non-empty folder that alignrec did not write (its other files are kept)."})
    hf_tokenizer_dir: str = field(
        default="",
        metadata={"help": "HF tokenizer whose ids tokens.json records (code tokens are added if absent); empty = "
                          "the default SmolLM2; 'none' = no tokenizer (ids are grid positions)."},
    )


@dataclass
class VocabValidateArgs:
    vocab_dir: str = field(metadata={"help": "Export folder to check (also accepted as the first positional argument)."})
    dataset_dir: str = field(
        default="", metadata={"help": "Optional dataset/split folder: also check every catalogue item has a code."}
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="Item embeddings -> RQ-VAE -> collision-free item tokenizer + report.",
                              add_help=False)
    p.set_defaults(handler=_run_tokenize)
    vocab = subparsers.add_parser("vocab", help="Export / validate the item code vocabulary for other teams.")
    sub = vocab.add_subparsers(dest="vocab_command", metavar="{export,validate}", required=True)
    p = sub.add_parser("export", help="Write items.jsonl, items.parquet, tokens.json and a manifest.", add_help=False)
    p.set_defaults(handler=_run_export)
    p = sub.add_parser("validate", help="Check an export: hashes, one-to-one codes, completeness.", add_help=False)
    p.set_defaults(handler=_run_validate)
    from tokenization.embeddings.cli import register as register_embedding_commands

    register_embedding_commands(subparsers)
    from tokenization.assign_cli import register as register_assign_command

    register_assign_command(subparsers)


def _run_tokenize(args, argv: list[str]) -> int:
    from recdata.split import SplitDataset
    from tokenization.config import TokenizerConfig
    from tokenization.embeddings import EmbeddingConfig
    from tokenization.pipeline import build_item_tokenizer

    run, cfg, emb_cfg = parse_config([TokenizeArgs, TokenizerConfig, EmbeddingConfig], argv)
    if not Path(run.split_dir).is_dir():
        raise InputFileError(f"--split_dir {run.split_dir} does not exist; create it with `alignrec data prepare`")
    from recdata.outputs import claim_output_dir

    claim_output_dir(run.output_dir, "tokenize", overwrite=run.overwrite,
                     inputs=[run.split_dir, emb_cfg.file_path, emb_cfg.file_ids_path, emb_cfg.sentence_encoder_dir,
                             emb_cfg.llm_dir])
    split = SplitDataset.load(run.split_dir)
    tok = build_item_tokenizer(cfg, split, run.output_dir, emb_cfg)
    report = json.loads((Path(run.output_dir) / "report.json").read_text(encoding="utf-8"))
    keys = ("num_items", "codebook_sizes", "level1_usage_pct", "collisions_before", "collisions_after",
            "items_moved", "recon_mse", "train_seconds")
    print(json.dumps({k: report[k] for k in keys} | {"content_hash": tok.content_hash}, indent=2))
    return 0


def _load_hf_tokenizer(spec: str):

    from alignrec.llm.hf_tokenizer import CODES_ONLY, load_hf_tokenizer
    from recdata.paths import default_llm_dir, require

    if spec == CODES_ONLY:
        return load_hf_tokenizer(spec), spec
    if spec:  # a wrong folder names the flag and the value, not `make setup`
        return load_hf_tokenizer(spec, "--hf_tokenizer_dir"), str(Path(spec))
    path = require(default_llm_dir(), "HF tokenizer folder")
    return load_hf_tokenizer(path), str(path)


def _run_export(args, argv: list[str]) -> int:
    from recdata.outputs import check_not_overlapping, claim_output_dir
    from tokenization.item_tokenizer import ItemTokenizer
    from tokenization.vocab_export import export_vocab

    (cfg,) = parse_config([VocabExportArgs], argv)
    hf_input = cfg.hf_tokenizer_dir if cfg.hf_tokenizer_dir.lower() not in ("none", "codes_only") else ""
    check_not_overlapping(Path(cfg.output_dir), [cfg.tokenizer_dir, hf_input], "vocab export")
    tok = ItemTokenizer.from_pretrained(cfg.tokenizer_dir)  # inputs first: a bad one leaves no output folder
    hf, hf_path = (None, None) if cfg.hf_tokenizer_dir.lower() == "none" else _load_hf_tokenizer(cfg.hf_tokenizer_dir)
    claim_output_dir(cfg.output_dir, "vocab export", inputs=[cfg.tokenizer_dir, hf_input], overwrite=cfg.overwrite)
    if hf is not None:
        tok.add_to_tokenizer(hf)
    aligned = {"item_tokenizer_dir": str(Path(cfg.tokenizer_dir).resolve()), "hf_tokenizer_dir": hf_path,
               "alignment_llm": tok.meta.get("alignment_llm"), "dataset": tok.meta.get("dataset")}
    out = export_vocab(tok, cfg.output_dir, hf, aligned)
    print(json.dumps({"output_dir": str(out), "num_items": len(tok), "content_hash": tok.content_hash}))
    return 0


def _run_validate(args, argv: list[str]) -> int:
    from tokenization.vocab_export import validate_vocab

    if argv and not argv[0].startswith("-"):
        argv = ["--vocab_dir", argv[0], *argv[1:]]
    (cfg,) = parse_config([VocabValidateArgs], argv)
    expected = None
    if cfg.dataset_dir:
        from recdata.dataset import RecDataset

        expected = RecDataset.load(cfg.dataset_dir).item_ids()
    summary = validate_vocab(cfg.vocab_dir, expected)  # a UserError: one line, exit 1
    print(json.dumps(summary, indent=2))
    return 0
