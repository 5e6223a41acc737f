"""``alignrec tasks build --config configs/tasks.yaml [--preview N]``: build and save the SFT task datasets.

``alignrec tasks queries --split_dir D --output_file Q.json`` first (optional) writes LLM-generated queries
that ``build`` adds to query2item via ``--query_file Q.json``.

Writes ``output_dir/`` = a ``DatasetDict`` (train, validation; ``datasets.load_from_disk``), ``preference/``
(DPO pairs), ``stats.json`` (per-task counts and token lengths) and ``resolved_config.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from recdata.config import parse_config
from recdata.errors import ConfigError

if TYPE_CHECKING:  # the handlers import the task library, so `alignrec --help` stays fast
    from sft_tasks.config import QueryGenConfig, TaskConfig

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="alignment tasks (stage two SFT data)")
    sub = parser.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND", required=True)
    build = sub.add_parser("build", help="build the SFT mixture, validation set and preference pairs", add_help=False)
    build.set_defaults(handler=_run_build)
    queries = sub.add_parser("queries", help="write LLM-generated query2item queries (cached)", add_help=False)
    queries.set_defaults(handler=_run_queries)
    requests = sub.add_parser("requests", help="write LLM-written requests about valid / test targets (an "
                              "evaluation set for `alignrec evaluate --task request`)", add_help=False)
    requests.set_defaults(handler=_run_requests)


def _load_inputs(cfg: TaskConfig):
    from alignrec.llm.hf_tokenizer import load_hf_tokenizer
    from recdata import SplitDataset
    from tokenization import ItemTokenizer

    for name in ("split_dir", "item_tokenizer_dir", "output_dir"):
        if not getattr(cfg, name):
            raise ConfigError(f"{name} is required (flag --{name} or the YAML key {name})")
    split = SplitDataset.load(cfg.split_dir)
    split.dataset.warn_untitled(cfg.split_dir, "the title tasks (item2code, code2item, query2item) show them without a "
                                               "word; fix the titles in the source and re-run `alignrec data prepare`")
    item_tokenizer = ItemTokenizer.from_pretrained(cfg.item_tokenizer_dir)
    used = {i for seq in split.dataset.sequences["item_ids"] for i in seq}
    item_tokenizer.check_catalogue(split.dataset.item_ids(), cfg.item_tokenizer_dir, cfg.split_dir, needed=used)
    hf_tokenizer = load_hf_tokenizer(cfg.hf_tokenizer_dir or None)
    return split, item_tokenizer, hf_tokenizer


def run_build(cfg: TaskConfig) -> dict:
    """Library-callable body of ``tasks build``; returns the stats written to ``stats.json``."""
    import numpy as np

    from alignrec.llm.hf_tokenizer import CODES_ONLY
    from recdata.outputs import check_not_overlapping
    from recdata.text_safety import terminal_safe
    from sft_tasks.builder import write_tasks
    from sft_tasks.stats import format_table

    inputs = (cfg.split_dir, cfg.item_tokenizer_dir, cfg.query_file,
              "" if cfg.hf_tokenizer_dir == CODES_ONLY else cfg.hf_tokenizer_dir)
    if cfg.output_dir:
        check_not_overlapping(cfg.output_dir, inputs, "tasks build")
    split, item_tokenizer, hf_tokenizer = _load_inputs(cfg)
    # rows are streamed to disk as they are made: memory does not grow with the number of users
    stats = write_tasks(cfg, split, item_tokenizer, hf_tokenizer, cfg.output_dir, (cfg,), inputs=inputs,
                        overwrite=cfg.overwrite)
    # Results for the person at the terminal go to stdout; progress goes to the log.
    print(format_table(stats["train"]))
    print(f"validation: {stats['validation']['total']['count']} seqrec examples; "
          f"preference pairs: {stats.get('preference', {}).get('pairs', 0)}; built in {stats['build']['build_seconds']}s")
    if cfg.preview:
        import datasets

        train = datasets.load_from_disk(str(Path(cfg.output_dir) / "train"))
        rows = np.random.default_rng(cfg.seed).choice(len(train), min(cfg.preview, len(train)), replace=False)
        for i in rows:
            ex = train[int(i)]
            print(terminal_safe(f"\n=== [{ex['task']}] example {int(i)} ===\n{ex['prompt']}{ex['completion']}"))
    return stats


def _run_build(args, argv: list[str]) -> int:
    from sft_tasks.config import TaskConfig

    (cfg,) = parse_config([TaskConfig], argv)
    run_build(cfg)
    return 0


def run_queries(cfg: QueryGenConfig) -> dict[str, list[str]]:
    from alignrec.llm.generation import hf_generator, model_fingerprint
    from alignrec.llm.inert_text import llm_inert_text
    from recdata import SplitDataset, atomic_write_json
    from recdata.paths import default_llm_dir, require
    from sft_tasks.query_gen import generate_queries

    if not cfg.split_dir or not cfg.output_file:
        raise ConfigError("split_dir and output_file are required (flags --split_dir/--output_file or YAML keys)")
    dataset = SplitDataset.load(cfg.split_dir).dataset
    llm_dir = Path(cfg.llm_dir) if cfg.llm_dir else require(default_llm_dir(), "the default LLM")
    item_ids = dataset.item_ids()[: cfg.max_items or None]
    fields = tuple(f.strip() for f in cfg.item_text_fields.split(",") if f.strip())
    queries = generate_queries(
        dataset.item_table(), item_ids, cfg.cache_file or f"{cfg.output_file}.cache.jsonl", model_fingerprint(llm_dir),
        lambda: hf_generator(llm_dir, cfg.max_new_tokens, cfg.batch_size), fields, cfg.max_description_words,
        settings={"max_new_tokens": cfg.max_new_tokens}, inert=llm_inert_text(llm_dir),
    )
    atomic_write_json(cfg.output_file, queries)
    logger.info("wrote %d items' queries to %s", len(queries), cfg.output_file)
    return queries


def run_requests(cfg) -> list[dict]:
    """``alignrec tasks requests``: ``sft_tasks.build_requests`` over the split, written as JSON lines."""
    from alignrec.llm.generation import hf_generator, model_fingerprint
    from alignrec.llm.inert_text import llm_inert_text
    from recdata import SplitDataset
    from recdata.paths import default_llm_dir, require
    from sft_tasks.requests import build_requests, write_requests

    if not cfg.split_dir or not cfg.output_file:
        raise ConfigError("split_dir and output_file are required (flags --split_dir/--output_file or YAML keys)")
    split = SplitDataset.load(cfg.split_dir)
    llm_dir = Path(cfg.llm_dir) if cfg.llm_dir else require(default_llm_dir(), "the default LLM")
    rows = build_requests(split, cfg.cache_file or f"{cfg.output_file}.cache.jsonl", model_fingerprint(llm_dir),
                          lambda: hf_generator(llm_dir, cfg.max_new_tokens, cfg.batch_size), per_part=cfg.per_part,
                          seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                          max_description_words=cfg.max_description_words, chunk=cfg.batch_size,
                          inert=llm_inert_text(llm_dir))
    write_requests(rows, cfg.output_file)
    logger.info("wrote %d requests to %s", len(rows), cfg.output_file)
    return rows


def _run_requests(args, argv: list[str]) -> int:
    from sft_tasks.requests import RequestGenConfig

    (cfg,) = parse_config([RequestGenConfig], argv)
    run_requests(cfg)
    return 0


def _run_queries(args, argv: list[str]) -> int:
    from sft_tasks.config import QueryGenConfig

    (cfg,) = parse_config([QueryGenConfig], argv)
    run_queries(cfg)
    return 0
