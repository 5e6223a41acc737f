"""``alignrec add-items``: items that arrived after training become recommendable by the trained model, no retraining.

    alignrec add-items --model_dir runs/x/train/model --vectors_dir runs/x+new/embeddings --output_dir runs/x/with_new

Every item of ``--vectors_dir`` (``vectors.npy`` + ``item_ids.json`` in the space the item tokenizer was fitted on,
covering the trained items too) that the model lacks gets a code (``ItemTokenizer.assign_new_items``: with an
item-id level, its greedy RQ code and a new own token after the existing ones). The model is merged (a LoRA run
becomes a full model), its vocabulary grows by the new tokens, and each new item's own-token rows are the ridge map
of its vector fitted on the trained items' rows (``trainer.cold_rows.fill_cold_rows``, what ``train.cold_rows:
fitted`` does for the cold-item protocol's items; ML-100K valid: the LLM's Recall@10 0.063 -> 0.106 against rows
left at their start, docs/results.md#cold-rows). Trained items keep their codes, token ids and rows exactly. The
output is a run folder like ``alignrec train --merge``'s ``merged/``, staged and moved into place only when
complete; the input is never modified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

__all__ = ["AddItemsArgs", "add_items", "register"]

MANIFEST_KEY = "added_items"  # alignrec_train.json of the output: {"items": n, "from": model_dir, ...fit record}


@dataclass
class AddItemsArgs:
    model_dir: str = field(metadata={"help": "A trained run folder (`alignrec train` output, or its merged/)."})
    vectors_dir: str = field(metadata={"help": "vectors.npy + item_ids.json of the trained items and the new ones, "
                                               "in the item tokenizer's input space (e.g. the embeddings stage of a "
                                               "run over the grown catalogue)."})
    output_dir: str = field(metadata={"help": "Folder for the grown model (a run folder; never the model_dir)."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not write."})


def register(subparsers) -> None:
    p = subparsers.add_parser("add-items", help="Make new items recommendable by a trained model (codes, tokens, "
                              "fitted rows), without retraining.", add_help=False)
    p.set_defaults(handler=_run)


def _run(args, argv: list[str]) -> int:
    import json

    from recdata.config import parse_config

    (cfg,) = parse_config([AddItemsArgs], argv)
    print(json.dumps(add_items(cfg), indent=2))
    return 0


def add_items(cfg: AddItemsArgs) -> dict:
    """Grow ``cfg.model_dir`` by the new items of ``cfg.vectors_dir`` into ``cfg.output_dir``; returns the record."""
    import torch

    from recdata.errors import UserError
    from recdata.io import atomic_write_json
    from recdata.item_vectors import load_embeddings_dir
    from recdata.outputs import check_output_dir, staged_output_dir
    from trainer.cold_rows import fill_cold_rows, own_tokens_unique
    from trainer.export import (
        ITEM_TOKENIZER_DIR,
        MANIFEST_FILE,
        load_for_inference,
        read_manifest,
        read_user_knowledge,
        write_user_knowledge,
    )

    check_output_dir(cfg.output_dir, "add-items", inputs=[cfg.model_dir, cfg.vectors_dir], overwrite=cfg.overwrite)
    manifest = read_manifest(cfg.model_dir)
    embeddings = load_embeddings_dir(cfg.vectors_dir)
    model, hf_tokenizer, trained = load_for_inference(cfg.model_dir, device="cpu", dtype=torch.float32)
    known, given = set(trained.item_ids), set(embeddings.item_ids)
    missing = [i for i in trained.item_ids if i not in given]
    if missing:
        raise UserError(f"{cfg.vectors_dir} lacks {len(missing)} trained item(s), e.g. {missing[:5]}: the new rows are "
                        "fitted on the trained items' vectors; give vectors for the whole grown catalogue")
    new_ids = [i for i in embeddings.item_ids if i not in known]
    if not new_ids:
        raise UserError(f"every item of {cfg.vectors_dir} is already in {cfg.model_dir}: nothing to add")
    row = {item: n for n, item in enumerate(embeddings.item_ids)}
    if not own_tokens_unique(trained, hf_tokenizer):
        raise UserError(f"{cfg.model_dir} has no item-id level (tokenizer.item_id_level): new items would share "
                        "their codes with trained items; retrain with an item-id level to add items")
    grown = trained.assign_new_items(new_ids, embeddings.vectors[[row[i] for i in new_ids]])
    if manifest["kind"] != "full":
        model = model.merge_and_unload()  # new rows in a plain model: no adapter holds rows for tokens it never had
    ids = grown.add_to_tokenizer(hf_tokenizer, grow=True)
    model.resize_token_embeddings(len(hf_tokenizer), mean_resizing=False)
    vectors = embeddings.vectors[[row[i] for i in grown.item_ids]]
    record = fill_cold_rows(model, grown, hf_tokenizer, list(grown.item_ids), vectors, new_ids)
    rows = int(model.get_input_embeddings().weight.shape[0])
    out = {**manifest, "kind": "full", "item_tokenizer_hash": grown.content_hash,
           "code_token_ids": [ids[0], ids[-1]], "embedding_rows": rows,
           MANIFEST_KEY: {"from": str(cfg.model_dir), "vectors_dir": str(cfg.vectors_dir), **record}}
    with staged_output_dir(cfg.output_dir, "add-items", inputs=[cfg.model_dir, cfg.vectors_dir],
                           overwrite=cfg.overwrite) as tmp:
        model.save_pretrained(tmp)
        hf_tokenizer.save_pretrained(tmp)
        grown.save_pretrained(tmp / ITEM_TOKENIZER_DIR)
        write_user_knowledge(tmp, out, read_user_knowledge(cfg.model_dir))
        atomic_write_json(tmp / MANIFEST_FILE, out)
    logger.info("%d new item(s) added to %s: %s (%d rows; trained items unchanged)", len(new_ids), cfg.model_dir,
                cfg.output_dir, rows)
    return {"model_dir": str(cfg.output_dir), "items": len(grown.item_ids), "added": len(new_ids),
            **{k: v for k, v in record.items() if k != "items"}}
