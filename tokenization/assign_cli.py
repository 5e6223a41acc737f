"""``alignrec assign-codes``: give new (cold) items codes in a trained ItemTokenizer, without retraining.

    alignrec embed --split_dir runs/data/sci --output_dir runs/emb/sci --source learn
    alignrec assign-codes --tokenizer_dir runs/tok/sci --embeddings_dir runs/emb/sci --output_dir runs/tok/sci+new

Every item of ``--embeddings_dir`` (``vectors.npy`` + ``item_ids.json``, as ``alignrec embed`` writes) that the
tokenizer lacks gets a free code through ``ItemTokenizer.assign_new_items`` (or only those of ``--item_ids``).
The vectors must live in the space the tokenizer was fitted on (same ``source``); existing codes never move.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from recdata.config import config_to_dict, parse_config

logger = logging.getLogger(__name__)


@dataclass
class AssignCodesArgs:
    tokenizer_dir: str = field(metadata={"help": "ItemTokenizer folder (output of `alignrec tokenize`)."})
    embeddings_dir: str = field(
        metadata={"help": "Folder with vectors.npy + item_ids.json (`alignrec embed` output) in the tokenizer's space."}
    )
    output_dir: str = field(metadata={"help": "Folder for the grown ItemTokenizer (old items keep their codes)."})
    item_ids: str = field(
        default="", metadata={"help": "Optional file of ids to assign (JSON list or one per line); default every "
                                      "item of embeddings_dir the tokenizer lacks."}
    )
    beam: int = field(default=0, metadata={"help": "Candidate codes per item; 0 = the tokenizer's cold_start_beam."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not write."})

    def __post_init__(self) -> None:
        from recdata.errors import ConfigError

        if self.beam < 0:
            raise ConfigError(f"--beam must be >= 0 (0 = the tokenizer's default), got {self.beam}")


def register(subparsers) -> None:
    p = subparsers.add_parser("assign-codes", help="Give new / cold items codes in a trained item tokenizer.",
                              add_help=False)
    p.set_defaults(handler=_run_assign)


def _run_assign(args, argv: list[str]) -> int:
    (cfg,) = parse_config([AssignCodesArgs], argv)
    print(json.dumps(run_assign(cfg), indent=2))
    return 0


def check_width(width: int, tok, emb_dir: Path, tokenizer_dir: str) -> None:
    """The vectors must have the width the tokenizer's RQ-VAE was fitted on: a wrong width means another embedding
    source (a text encoder instead of SASRec, another model), whose codes would be meaningless."""
    from recdata.errors import UserError

    expected = (tok.model_config or {}).get("in_dim")
    if expected is not None and width != int(expected):
        source = (tok.meta or {}).get("embeddings") or {}
        hint = f" ({', '.join(f'{k}: {v}' for k, v in source.items())})" if isinstance(source, dict) and source else ""
        raise UserError(f"{emb_dir / 'vectors.npy'} holds {width}-wide vectors but the tokenizer {tokenizer_dir} was "
                        f"fitted on {int(expected)}-wide ones; embed the new items with the source the tokenizer was "
                        f"fitted with{hint}")


def run_assign(cfg: AssignCodesArgs) -> dict:
    from recdata.errors import UserError
    from recdata.io import atomic_write_json
    from recdata.outputs import claim_output_dir
    from tokenization.embeddings import load_embeddings_dir, read_id_list
    from tokenization.item_tokenizer import ItemTokenizer

    emb_dir = Path(cfg.embeddings_dir)
    embeddings = load_embeddings_dir(emb_dir)
    tok = ItemTokenizer.from_pretrained(cfg.tokenizer_dir)
    ids, vectors = embeddings.item_ids, embeddings.vectors
    check_width(vectors.shape[1], tok, emb_dir, cfg.tokenizer_dir)
    row_of = {item: row for row, item in enumerate(ids)}
    if cfg.item_ids:
        wanted = read_id_list(cfg.item_ids)
        missing = [i for i in wanted if i not in row_of]
        if missing:
            raise UserError(f"{cfg.item_ids}: {len(missing)} id(s) have no vector in {emb_dir} (e.g. {missing[0]!r})")
        coded = [i for i in wanted if i in tok]
        if coded:
            raise UserError(f"{cfg.item_ids}: {len(coded)} id(s) already have codes in {cfg.tokenizer_dir} "
                            f"(e.g. {coded[0]!r}); list only new items")
    else:
        wanted = [i for i in ids if i not in tok]
    out = claim_output_dir(cfg.output_dir, "assign-codes", inputs=[cfg.tokenizer_dir, cfg.embeddings_dir],
                           overwrite=cfg.overwrite)
    grown = tok.assign_new_items(wanted, vectors[[row_of[i] for i in wanted]], beam=cfg.beam or None) if wanted else tok
    grown.save_pretrained(out)
    atomic_write_json(out / "resolved_config.json", config_to_dict(cfg))
    logger.info("assigned codes to %d new item(s); %d items in %s", len(wanted), len(grown), out)
    return {"output_dir": str(out), "assigned": len(wanted), "num_items": len(grown),
            "content_hash": grown.content_hash}
