"""Regenerate the results page's generated tables from the measurements they report (``docs/data/*.json``).

    python scripts/gen_results_tables.py            # rewrite every generated block of docs/results.md
    python scripts/gen_results_tables.py --check    # exit 1 if a block differs from a fresh rendering

``bench_results/`` is not committed, so a table the docs report is kept as its bench output under ``docs/data/``
(small JSON, copied as written) and rendered from it by the bench script's own functions: the page cannot drift
from the numbers, and a test checks it is fresh. A block in the page is

    <!-- generated: cold LABEL=docs/data/A.json [LABEL=docs/data/B.json ...] -->
    (rendered lines)
    <!-- end generated -->

``cold``: one dataset's table from ``scripts/bench_cold.py`` outputs on the same split and part (checked): every
row of the first file, then each other file's rows the earlier files lack (ours is ``alignrec (LABEL)`` in every
file, so each file adds its ours), overall and on the cold slice with 95% intervals; the first file's paired table
of ours - row; each file's requests table.

``scenarios``: one ``scripts/bench_scenarios.py`` output (LLM4MSR and the multi-scenario rows): the per-scenario
table of every row, their training records and the LLM's cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cold import OURS, RESAMPLES, cold_table, split_sentence, versus_lines  # noqa: E402
from bench_cold_requests import render_requests  # noqa: E402

from recdata.evaluation import render_scenario_table, scenario_dataset_sentence  # noqa: E402
from recdata.io import atomic_write_text  # noqa: E402

logger = logging.getLogger("gen_results_tables")
REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "results.md"
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
SAME_SPLIT = ("examples", "cold_targets", "cold_targets_of_withheld_items", "items", "withheld_items",
              "exclude_history")


def parse_spec(spec: str) -> tuple[str, list[tuple[str, Path]]]:
    """``cold a=docs/data/x.json b=...`` -> ``("cold", [("a", REPO/docs/data/x.json), ...])``."""
    kind, *sources = spec.split()
    if kind not in RENDERERS:
        raise ValueError(f"generated block {spec!r}: unknown kind {kind!r} (known: {', '.join(RENDERERS)})")
    if not sources:
        raise ValueError(f"generated block {spec!r}: name at least one LABEL=docs/data/FILE.json")
    parsed = []
    for token in sources:
        label, sep, path = token.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"generated block {spec!r}: {token!r} is not LABEL=PATH")
        parsed.append((label, REPO / path))
    return kind, parsed


def render_cold(sources: list[tuple[str, Path]]) -> list[str]:
    """One dataset's cold table from bench_cold outputs of the same split and part (see the module docstring)."""
    results = []
    for _, path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: copy the bench_cold output there (bench_results/...)")
        results.append(json.loads(path.read_text(encoding="utf-8")))
    first = results[0]
    for (_, path), result in zip(sources[1:], results[1:], strict=True):
        if result["part"] != first["part"] or result["metrics"] != first["metrics"] or \
                any(result["split"][k] != first["split"][k] for k in SAME_SPLIT):
            raise ValueError(f"{path}: another split, part or metrics than {sources[0][1]}; one table holds one "
                             "dataset's split and part")
    rows: dict[str, Any] = {}
    for (label, path), result in zip(sources, results, strict=True):
        if OURS not in result["rows"]:
            raise ValueError(f"{path}: no {OURS} row")
        for name, row in result["rows"].items():
            shown = f"{OURS} ({label})" if name == OURS else name
            rows.setdefault(shown, row)  # a row the earlier files already gave keeps theirs
    metrics = first["metrics"]
    lines = [split_sentence(first["split"], first["part"]), "", *cold_table(rows, metrics)]
    if first["versus_ours"]:
        lines += ["", *versus_lines(first["versus_ours"], metrics, ours=f"{OURS} ({sources[0][0]})")]
    for (label, _), result in zip(sources, results, strict=True):
        if "requests" in result:
            lines += ["", *render_requests(result["requests"], RESAMPLES, heading=f"**{OURS} ({label}):**")]
    return lines


def render_scenarios(sources: list[tuple[str, Path]]) -> list[str]:
    """One ``scripts/bench_scenarios.py`` output: the dataset, every row's per-scenario table, each trained row's
    training record and the LLM's cost (one file: a per-scenario table is one split's)."""
    if len(sources) != 1:
        raise ValueError(f"a scenarios block renders one bench_scenarios output, got {len(sources)}")
    path = sources[0][1]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: copy the bench_scenarios output there (bench_results/...)")
    result = json.loads(path.read_text(encoding="utf-8"))
    reports = result["reports"]
    n_test = next(iter(reports.values()))["n_examples"]
    lines = [f"{scenario_dataset_sentence(result['stats'], result['args']['kcore'], n_test)}; test part, full "
             "ranking, history excluded.", "",
             *render_scenario_table(reports).splitlines()[2:]]  # the table without its own heading
    trained = []
    for name, rep in reports.items():
        info = rep.get("train_info") or {}
        # one record, or one per scenario (a SASRec per scenario)
        records = [(name, info)] if "seconds" in info else [(f"{name} ({s})", r) for s, r in info.items()]
        trained += [(label, r) for label, r in records if isinstance(r, dict) and "seconds" in r]
    if trained:
        lines += ["", "Training (early stopping on valid NDCG@10): " + "; ".join(
            f"{name} {info['seconds']:.0f} s, {info['epochs']} epochs, best valid NDCG@10 "
            f"{info['best_valid_ndcg@10']:.4f}" for name, info in trained) + "."]
    for name, rep in reports.items():
        cost = rep.get("llm_cost")
        if cost:
            lines += ["", f"LLM cost of {name}: {cost['total']['llm_calls']:,} calls, "
                          f"{cost['total']['generated_tokens']:,} generated tokens, {cost['wall_seconds']:.0f} s "
                          f"(user prompts hold out each user's last {cost.get('user_holdout_items', 0)} training "
                          "item(s))."]
    return lines


RENDERERS = {"cold": render_cold, "scenarios": render_scenarios}


def regenerate(text: str) -> str:
    """The page with every generated block re-rendered from its sources."""
    def fill(match: re.Match) -> str:
        kind, sources = parse_spec(match["spec"])
        return match.group(1) + "\n".join(RENDERERS[kind](sources)) + "\n" + match.group(4)
    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, default=PAGE, help="the Markdown page (default docs/results.md)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from a fresh rendering")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    text = args.page.read_text(encoding="utf-8")
    try:
        fresh = regenerate(text)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    blocks = len(BLOCK.findall(text))
    if args.check:
        if fresh != text:
            logger.error("%s is stale: run python scripts/gen_results_tables.py and commit the page", args.page)
            return 1
        logger.info("%s: %d generated block(s) fresh", args.page, blocks)
        return 0
    if fresh != text:
        atomic_write_text(args.page, fresh)
    logger.info("%s: %d generated block(s) %s", args.page, blocks, "rewritten" if fresh != text else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
