"""``extract_scenario_knowledge``: LLM4MSR's scenario- and user-level prompts over a split, with a cost report.

Every prompt reads the training part only: scenario examples are the most bought *training* items of each
scenario (``split.train_scenario_popularity()``), user prompts show the last training items of a user
(``split.train_scenario_sequences()``) before its last ``user_holdout_items`` (REKI's rule, shared with
``alignrec.knowledge``: each user row records ``history_items``, and the user meta layer joins only the training
targets after them), user clusters are built from those items and show their members' most bought ones. Answers go through ``alignrec.llm.generation`` (one cache keyed by prompt + model +
settings), so a killed run resumes and no prompt is asked twice.

Users: a seeded sample is asked individually; the others share the answer of their k-means cluster's prompt
(collective fallback, REKI-style), so the LLM cost is ``scenarios + user_sample + clusters`` calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.knowledge.clusters import cluster_item_vectors, kmeans_labels, popular_items, user_vectors
from alignrec.knowledge.extract import user_training_histories
from alignrec.knowledge.prompts import Inert
from alignrec.llm.generation import Generator, budgeted_asker
from alignrec.llm4msr import prompts as P
from alignrec.llm4msr.config import ScenarioExtractConfig
from recdata.errors import UserError
from recdata.io import atomic_write_json, atomic_write_text
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)

__all__ = ["build_scenario_prompts", "build_user_prompts", "extract_scenario_knowledge", "require_scenarios"]


def require_scenarios(split: SplitDataset) -> None:
    if not split.has_scenarios:
        raise UserError(f"{split.dataset.name} has no scenario labels; prepare it with scenario_column or "
                        "scenario_item_field (e.g. --scenario_item_field domain)")


def build_scenario_prompts(cfg: ScenarioExtractConfig, split: SplitDataset, inert: Inert | None = None
                           ) -> dict[str, str]:
    """``{scenario: prompt}``: one per scenario, each listing every scenario with its most bought training items
    (catalogue text through ``inert``, as in ``build_user_prompts``)."""
    items = split.dataset.item_table()
    order = {i: r for r, i in enumerate(split.dataset.item_ids())}
    popularity = split.train_scenario_popularity()
    examples = {s: [items[i] for i in sorted(counts, key=lambda i: (-counts[i], order[i]))[:cfg.scenario_examples]]
                for s, counts in popularity.items()}
    return {name: P.scenario_prompt(name, examples, cfg.max_title_words, inert) for name in sorted(examples)}


def _sample(ids: list[str], limit: int, seed: int) -> list[str]:
    if limit >= len(ids):
        return list(ids)
    keep = set(np.random.default_rng(seed).choice(len(ids), limit, replace=False).tolist())
    return [i for r, i in enumerate(ids) if r in keep]  # user order


def build_user_prompts(cfg: ScenarioExtractConfig, split: SplitDataset, inert: Inert | None = None
                       ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """``(prompts {name: prompt}, assignment {user_id: prompt name}, info)``; titles and scenario names go through
    ``inert`` (the generator LLM's ``InertText``; default: the code-token pattern only).

    A sampled user's prompt is named by its id; a cluster prompt ``user-cluster-<c>`` is built only for clusters
    with a member outside the sample, and only those members are assigned to it.
    """
    dataset = split.dataset
    items = dataset.item_table()
    catalogue = dataset.item_ids()
    names = split.scenario_names()
    histories = user_training_histories(split, cfg.user_holdout_items)
    labels = {u: s[:len(histories[u])] for u, _, s in split.train_scenario_sequences() if u in histories}
    last = cfg.user_history_items
    users = list(histories)
    sampled = _sample(users, cfg.user_sample, cfg.seed)
    prompts = {u: P.user_prompt([items[i] for i in histories[u][-last:]], labels[u][-last:], names,
                                cfg.max_title_words, inert) for u in sampled}
    assignment = {u: u for u in sampled}
    info: dict[str, Any] = {"users": len(users), "individual": len(sampled), "clusters": 0, "clustered_users": 0,
                            "without_knowledge": len(users) - len(sampled)}
    chosen = set(sampled)
    rest = [u for u in users if u not in chosen]
    if rest and cfg.user_clusters:
        item_scenario = split.item_scenario()
        # cluster_item_vectors reads cluster_source / cluster_file / cluster_ids_file / seed, which this config shares
        ids, vectors = user_vectors(list(histories.items()), cluster_item_vectors(cfg, dataset), catalogue)
        cluster_labels, _ = kmeans_labels(vectors, cfg.user_clusters, cfg.seed)
        cluster_of = {u: int(c) for u, c in zip(ids, cluster_labels, strict=True)}
        order = {i: r for r, i in enumerate(catalogue)}
        for c in sorted({cluster_of[u] for u in rest}):
            members = [histories[u][-last:] for u in ids if cluster_of[u] == c]
            top = popular_items(members, cfg.group_examples, order)
            prompts[f"user-cluster-{c}"] = P.user_group_prompt([items[i] for i in top], [item_scenario[i] for i in top],
                                                              names, cfg.max_title_words, inert)
        assignment.update({u: f"user-cluster-{cluster_of[u]}" for u in rest})
        sizes = np.bincount([cluster_of[u] for u in rest])
        info.update(clusters=len(prompts) - len(sampled), clustered_users=len(rest), without_knowledge=0,
                    cluster_size_min=int(sizes[sizes > 0].min()), cluster_size_max=int(sizes.max()))
    return prompts, assignment, info


def extract_scenario_knowledge(cfg: ScenarioExtractConfig, split: SplitDataset, out_dir: Path, model_id: str,
                               make_generator: Callable[[], Generator], inert: Inert | None = None) -> dict[str, Any]:
    """Write ``scenario_knowledge.jsonl``, ``user_knowledge.jsonl``, ``prompts.jsonl``, ``cost.json``; return the cost.

    ``make_generator`` is called at most once, and only when some answer is not cached. ``inert``: the generator
    LLM's ``InertText`` (``alignrec.llm.llm_inert_text``).
    """
    require_scenarios(split)
    started = time.perf_counter()
    cache_file = Path(cfg.cache_file) if cfg.cache_file else out_dir / "answers.cache.jsonl"
    ask = budgeted_asker("scenarios extract", cache_file, model_id, make_generator,
                         settings={"max_new_tokens": cfg.max_new_tokens, "decoding": "greedy"},
                         chunk=cfg.batch_size, max_seconds=cfg.max_seconds)

    scenario_prompts = build_scenario_prompts(cfg, split, inert)
    user_prompts, assignment, info = build_user_prompts(cfg, split, inert)
    atomic_write_text(out_dir / "prompts.jsonl", "".join(
        _jsonl({"level": level, "name": name, "prompt": prompt})
        for level, prompts in (("scenario", scenario_prompts), ("user", user_prompts)) for name, prompt in prompts.items()))
    scen = ask(scenario_prompts, "scenario-level knowledge")
    atomic_write_text(out_dir / "scenario_knowledge.jsonl", "".join(
        _jsonl({"scenario_id": name, "text": scen.answers[name].strip(), "group": None}) for name in scenario_prompts))
    users = ask(user_prompts, "user-level knowledge")
    read = user_training_histories(split, cfg.user_holdout_items)  # what each user's knowledge may describe
    atomic_write_text(out_dir / "user_knowledge.jsonl", "".join(
        _jsonl({"user_id": u, "text": users.answers[name].strip(), "group": None if name == u else name,
                "history_items": len(read[u])})
        for u, name in assignment.items()))
    cost = {"model_id": model_id, "max_new_tokens": cfg.max_new_tokens,
            "user_holdout_items": cfg.user_holdout_items,
            "scenario": {"scenarios": len(scenario_prompts), **scen.stats},
            "user": {**info, **users.stats}}
    cost["total"] = {"llm_calls": cost["scenario"]["llm_calls"] + cost["user"]["llm_calls"],
                     "generated_tokens": cost["scenario"]["generated_tokens"] + cost["user"]["generated_tokens"]}
    cost["wall_seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out_dir / "cost.json", cost)
    return cost


def _jsonl(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row, ensure_ascii=False) + "\n"
