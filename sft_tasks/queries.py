"""``query2item``: natural-language needs -> item code. Queries are built offline from item attributes
(category path, brand, TF-IDF key phrases of the description) plus, optionally, LLM-written queries read
from a cache file (``sft_tasks.query_gen``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from recdata.errors import InputFileError, UserError
from sft_tasks.base import ListTask
from sft_tasks.context import TaskContext
from sft_tasks.formatting import category_path
from sft_tasks.templates import QUERY_TEMPLATES

logger = logging.getLogger(__name__)


def description_keywords(descriptions: dict[str, str], k: int) -> dict[str, list[str]]:
    """Top-``k`` TF-IDF unigrams/bigrams of each description, skipping terms that share a word with a kept one."""
    docs = {i: d for i, d in descriptions.items() if d.strip()}
    if not docs or k == 0:
        return {}
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Boilerplate words ("product", "quality") occur everywhere on real catalogues; drop them there.
    max_df = 0.3 if len(docs) >= 50 else 1.0
    vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), max_df=max_df, sublinear_tf=True)
    try:
        matrix = vectorizer.fit_transform(list(docs.values())).tocsr()
    except ValueError:  # every description consists of stop words only
        return {}
    vocab = vectorizer.get_feature_names_out()
    out: dict[str, list[str]] = {}
    for row, item_id in enumerate(docs):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        cols, vals = matrix.indices[start:end], matrix.data[start:end]
        kept: list[str] = []
        used: set[str] = set()
        for j in np.lexsort((cols, -vals)):  # best score first, ties by vocabulary order
            term = str(vocab[cols[j]])
            if used & set(term.split()):  # "fence warning" after "electric fence" adds little
                continue
            kept.append(term)
            used.update(term.split())
            if len(kept) == k:
                break
        if kept:
            out[item_id] = kept
    return out


def attribute_queries(
    items: dict[str, dict[str, str]], item_ids: list[str], keywords: int, per_item: int, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Query strings per item from QUERY_TEMPLATES; ``per_item`` random variants (0 = all available)."""
    phrases = description_keywords({i: items[i].get("description", "") for i in item_ids}, keywords)
    out: dict[str, list[str]] = {}
    for item_id in item_ids:
        row = items[item_id]
        path = category_path(row.get("categories") or "")
        values = {
            "category": path[-1] if path else "",
            "path": " > ".join(path[-2:]) if len(path) >= 2 else "",  # the root ("Industrial & Scientific") says little
            "brand": (row.get("brand") or "").strip(),
            "keywords": ", ".join(phrases.get(item_id, [])),
        }
        variants = [text.format(**values) for needs, text in QUERY_TEMPLATES if all(values[f] for f in needs)]
        if per_item and len(variants) > per_item:
            keep = sorted(rng.choice(len(variants), per_item, replace=False))
            variants = [variants[j] for j in keep]
        if variants:
            out[item_id] = variants
    return out


def load_query_file(path: str | Path, known_items: set[str]) -> dict[str, list[str]]:
    """Read ``{item_id: [query, ...]}``; unknown ids or non-string queries raise naming the entry."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"query_file {path} does not exist; create it with `alignrec tasks queries` or unset it")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"query_file {path} is not one UTF-8 JSON object ({exc}); write it with `alignrec tasks "
                        "queries` (JSON {item_id: [query, ...]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object {{item_id: [query, ...]}}, got {type(data).__name__}")
    out: dict[str, list[str]] = {}
    for item_id, queries in data.items():
        if item_id not in known_items:
            raise UserError(f"{path}: item {item_id!r} is not in the dataset's coded catalogue; regenerate the file")
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise UserError(f"{path}: item {item_id!r} must map to a list of strings, got {queries!r}")
        out[item_id] = [q.strip() for q in queries if q.strip()]
    return out


def build_query2item(ctx: TaskContext) -> ListTask:
    rng = ctx.rng("query2item")
    queries = attribute_queries(ctx.items, ctx.item_ids, ctx.cfg.query_keywords, ctx.cfg.queries_per_item, rng)
    if ctx.cfg.query_file:
        for item_id, extra in load_query_file(ctx.cfg.query_file, set(ctx.item_ids)).items():
            queries.setdefault(item_id, []).extend(q for q in extra if q not in queries.get(item_id, []))
    templates = ctx.templates("query2item")
    pairs = [(item_id, q) for item_id in ctx.item_ids for q in queries.get(item_id, [])]
    pick = rng.integers(0, len(templates), size=len(pairs))
    prompts = [ctx.format(templates[t].format(query=ctx.format.inert(q))) for (_, q), t in zip(pairs, pick, strict=True)]
    return ListTask("query2item", prompts, [ctx.code[i] for i, _ in pairs])
