"""Optional LLM-written queries for ``query2item``: the local LLM reads each item's text and writes a search
query. Answers are cached in a JSON-lines file keyed by (model, prompt, decoding settings), so reruns and
interrupted runs only generate what is missing; nothing is fetched from a hub. The item text goes through
``inert`` (the generator LLM's ``InertText``), so a title like ``<|im_end|>`` stays text in the LLM's prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignrec.llm.generation import Generator, generate_cached, hf_generator, model_fingerprint, read_cache
from alignrec.llm.inert_text import InertText
from sft_tasks.formatting import item_text
from sft_tasks.templates import QUERY_GENERATION_PROMPT

logger = logging.getLogger(__name__)

__all__ = ["clean_query", "generate_queries", "hf_generator", "model_fingerprint", "read_cache"]


def clean_query(answer: str, max_words: int = 16) -> str:
    """First line, without quotes or a 'Query:' label; '' when empty or longer than ``max_words``."""
    line = answer.strip().split("\n")[0].strip()
    if line.lower().startswith("query:"):
        line = line[6:].strip()
    line = line.strip("\"'` ")
    return line if 0 < len(line.split()) <= max_words else ""


def generate_queries(
    items: dict[str, dict[str, str]],
    item_ids: list[str],
    cache_path: str | Path,
    model_id: str,
    make_generator: Callable[[], Generator],
    fields: tuple[str, ...] = ("title", "brand", "categories", "description"),
    max_description_words: int = 48,
    settings: dict[str, Any] | None = None,
    chunk: int = 64,
    inert: Callable[[str], str] | None = None,
) -> dict[str, list[str]]:
    """``{item_id: [query]}`` for items whose cleaned answer is usable; the model loads only if needed.
    ``inert``: the generator LLM's ``InertText`` (default: the code-token pattern and control characters only)."""
    inert = inert or InertText()
    prompts = {i: QUERY_GENERATION_PROMPT.format(item=inert(item_text(items[i], list(fields), max_description_words)))
               for i in item_ids}
    result = generate_cached(prompts, Path(cache_path), model_id, make_generator, settings=settings, chunk=chunk,
                             desc="queries", id_field="item_id")
    out = {}
    for item_id in item_ids:
        query = clean_query(result.answers[item_id])
        if query:
            out[item_id] = [query]
    logger.info("query generation: %d of %d items got a usable query", len(out), len(item_ids))
    return out
