"""``extract_knowledge``: REKI's factorization prompting over a split, individual or collective, with a cost report.

Item prompts read the item table; user prompts read ``split.train_sequences()`` only (never a validation
or test item), for training and evaluation alike, minus the last ``user_holdout_items`` of each: a user's
knowledge describes items ``[0, history_items)`` of its training part (written on every user row), and the
models use it only for targets from ``history_items`` on, so training never asks "predict an item that this
user's knowledge already describes" (a leak that evaluation, whose targets all come later, cannot reward).
Every answer goes through ``alignrec.llm.generation`` (one cache keyed by prompt + model + settings), so a
killed run resumes and no prompt is asked twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.knowledge import prompts as P
from alignrec.knowledge.clusters import (
    cluster_item_vectors,
    group_representatives,
    kmeans_labels,
    popular_items,
    user_vectors,
)
from alignrec.knowledge.config import ExtractConfig
from alignrec.llm.generation import Generator, budgeted_asker
from recdata.errors import UserError
from recdata.io import atomic_write_json, atomic_write_text
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)

__all__ = ["build_prompts", "extract_knowledge", "read_knowledge", "read_user_history_items",
           "user_training_histories"]

KNOWLEDGE_FILES = {"item": "item_knowledge.jsonl", "user": "user_knowledge.jsonl",
                   "scenario": "scenario_knowledge.jsonl"}  # scenario: `alignrec scenarios extract` (LLM4MSR)


def user_training_histories(split: SplitDataset, holdout: int = 0) -> dict[str, list[str]]:
    """What user knowledge may read: each training part minus its last ``holdout`` items (users left with none
    are dropped)."""
    out = {}
    for user_id, items in split.train_sequences():
        kept = list(items)[:max(len(items) - holdout, 0)]
        if kept:
            out[user_id] = kept
    return out


def _sample(ids: list[str], limit: int, rng: np.random.Generator) -> list[str]:
    if not limit or limit >= len(ids):
        return list(ids)
    keep = set(rng.choice(len(ids), limit, replace=False).tolist())
    return [i for r, i in enumerate(ids) if r in keep]  # catalogue / user order


def build_prompts(cfg: ExtractConfig, split: SplitDataset, kind: str, factors: list[str],
                  inert: P.Inert | None = None) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """``(prompts {name: prompt}, assignment {member id: prompt name}, info)`` for one knowledge kind; catalogue
    text goes through ``inert`` (the generator LLM's ``InertText``; default: the code-token pattern only).

    individual: a prompt per (sampled) item / user, named by its id; collective: a prompt per k-means
    cluster, named ``<kind>-cluster-<c>``, and every item / user is assigned to its cluster's prompt.
    """
    dataset = split.dataset
    items = dataset.item_table()
    catalogue = dataset.item_ids()
    histories = user_training_histories(split, cfg.user_holdout_items)
    rng = np.random.default_rng(cfg.seed + (0 if kind == "item" else 1))
    last = cfg.user_history_items
    if cfg.mode == "individual":
        if kind == "item":
            chosen = _sample(catalogue, cfg.max_items, rng)
            prompts = {i: P.item_prompt(items[i], factors, cfg.max_title_words, inert) for i in chosen}
        else:
            chosen = _sample(list(histories), cfg.max_users, rng)
            prompts = {u: P.user_prompt([items[i] for i in histories[u][-last:]], factors, cfg.max_title_words,
                                        inert) for u in chosen}
        return prompts, {m: m for m in chosen}, {"members": len(chosen)}

    item_vecs = cluster_item_vectors(cfg, dataset)  # [items, D]
    if kind == "item":
        ids, vectors, count = catalogue, item_vecs, cfg.item_clusters
    else:
        ids, vectors = user_vectors(list(histories.items()), item_vecs, catalogue)
        count = cfg.user_clusters
    labels, centroids = kmeans_labels(vectors, count, cfg.seed)
    order = {i: r for r, i in enumerate(catalogue)}
    prompts: dict[str, str] = {}
    for c, rows in sorted(group_representatives(vectors, labels, centroids, cfg.group_examples).items()):
        name = f"{kind}-cluster-{c}"
        if kind == "item":
            prompts[name] = P.item_group_prompt([items[ids[r]] for r in rows], factors, cfg.max_title_words, inert)
        else:
            members = [histories[ids[r]][-last:] for r in np.flatnonzero(labels == c)]
            top = popular_items(members, cfg.group_examples, order)
            prompts[name] = P.user_group_prompt([items[i] for i in top], factors, cfg.max_title_words, inert)
    assignment = {ids[r]: f"{kind}-cluster-{int(labels[r])}" for r in range(len(ids))}
    sizes = np.bincount(labels)
    return prompts, assignment, {"members": len(assignment), "clusters": len(prompts),
                                 "cluster_size_min": int(sizes.min()), "cluster_size_max": int(sizes.max())}


def _factors(cfg: ExtractConfig, ask: Callable[[dict[str, str], str], Any], inert: P.Inert | None) -> dict[str, Any]:
    if cfg.factor_list():
        return {"factors": cfg.factor_list(), "source": "config"}
    prompt = P.factor_prompt(cfg.domain, cfg.num_factors, inert)
    result = ask({"factors": prompt}, "factors")
    answer = result.answers.get("factors", "")
    factors = P.parse_factors(answer, cfg.num_factors)
    if len(factors) < 2:
        raise UserError(f"the LLM's factor answer {answer!r} holds fewer than 2 usable factor names; pass them "
                        "yourself, e.g. --factors 'use case,material,standard,brand'")
    return {"factors": factors, "source": "llm", "prompt": prompt, "answer": answer, "cost": result.stats}


def extract_knowledge(cfg: ExtractConfig, split: SplitDataset, out_dir: Path, model_id: str,
                      make_generator: Callable[[], Generator], inert: P.Inert | None = None) -> dict[str, Any]:
    """Write ``factors.json``, ``<kind>_knowledge.jsonl``, ``cost.json``; return the cost report.

    ``make_generator`` is called at most once, and only when some answer is not cached. ``inert``: the generator
    LLM's ``InertText`` (``alignrec.llm.llm_inert_text``), applied to every piece of catalogue text in a prompt.
    """
    started = time.perf_counter()
    cache_file = Path(cfg.cache_file) if cfg.cache_file else out_dir / "answers.cache.jsonl"
    ask = budgeted_asker("knowledge extract", cache_file, model_id, make_generator,
                         settings={"max_new_tokens": cfg.max_new_tokens, "decoding": "greedy"},
                         chunk=cfg.batch_size, max_seconds=cfg.max_seconds)

    factors = _factors(cfg, ask, inert)
    atomic_write_json(out_dir / "factors.json", factors)
    cost: dict[str, Any] = {"mode": cfg.mode, "max_new_tokens": cfg.max_new_tokens, "model_id": model_id,
                            "user_holdout_items": cfg.user_holdout_items,
                            "factors": factors.get("cost")}
    for kind in cfg.kind_list():
        prompts, assignment, info = build_prompts(cfg, split, kind, factors["factors"], inert)
        result = ask(prompts, f"{kind} knowledge")
        histories = user_training_histories(split, cfg.user_holdout_items) if kind == "user" else {}
        lines = [{f"{kind}_id": member, "text": result.answers[name].strip(),
                  "group": None if cfg.mode == "individual" else name,
                  **({"history_items": len(histories[member])} if kind == "user" else {})}
                 for member, name in assignment.items()]
        atomic_write_text(out_dir / KNOWLEDGE_FILES[kind], "".join(_jsonl(line) for line in lines))
        total = len(split.dataset.item_ids()) if kind == "item" else len(histories)
        cost[kind] = {**info, **result.stats, "population": total, **_extrapolate(result.stats, len(prompts), total,
                                                                                 cfg.mode)}
    cost["wall_seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out_dir / "cost.json", cost)
    return cost


def _extrapolate(stats: dict[str, Any], prompts: int, population: int, mode: str) -> dict[str, Any]:
    """Individual mode on a sample: what all ``population`` members would cost at the measured per-call rate."""
    calls = stats.get("llm_calls") or 0
    if mode != "individual" or not calls or not prompts:
        return {}
    return {"full_population_calls_est": population,
            "full_population_tokens_est": round(stats["generated_tokens"] / calls * population),
            "full_population_seconds_est": round(stats["seconds"] / calls * population, 1)}


def _jsonl(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row, ensure_ascii=False) + "\n"


def read_knowledge(knowledge_dir: str | Path, kind: str) -> dict[str, str]:
    """``{item_id | user_id: knowledge text}`` from an extract output folder."""
    import json

    path = Path(knowledge_dir) / KNOWLEDGE_FILES[kind]
    if not path.is_file():
        command = "alignrec scenarios extract" if kind == "scenario" else f"alignrec knowledge extract --kinds {kind}"
        raise UserError(f"{path} does not exist; run `{command}` first")
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            out[str(row[f"{kind}_id"])] = str(row["text"])
        except (json.JSONDecodeError, KeyError) as exc:
            raise UserError(f"{path}:{lineno}: not a {kind} knowledge row ({exc}); rerun the extraction") from None
    return out


def read_user_history_items(knowledge_dir: str | Path, required: bool = True,
                            command: str = "alignrec knowledge extract") -> dict[str, int] | None:
    """``{user_id: n}``: user knowledge describes the first ``n`` training items; use it for later targets only.

    Rows without ``history_items`` (an older extract): an error naming ``command`` (the extraction to rerun:
    ``alignrec scenarios extract`` for LLM4MSR's user answers), or None when not ``required``.
    """
    import json

    path = Path(knowledge_dir) / KNOWLEDGE_FILES["user"]
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `alignrec knowledge extract --kinds user` first")
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not a user knowledge row ({exc}); rerun the extraction") from None
        if "history_items" not in row:
            if not required:
                return None
            raise UserError(f"{path}:{lineno}: user row without history_items (written by an older alignrec, whose "
                            f"user knowledge leaks training targets); rerun `{command}` (cached answers are reused)")
        out[str(row["user_id"])] = int(row["history_items"])
    return out
