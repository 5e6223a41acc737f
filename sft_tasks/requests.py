"""Requests in words: an evaluation set of natural-language requests whose answers are known valid / test items.

``build_requests`` asks the project's cached LLM generator (``alignrec.llm.generation``) to write, for a seeded
sample of each part's evaluation rows, the sentence a customer who ends up buying the *target* item would say
(``REQUEST_GENERATION_PROMPT``: not the prompt that writes ``query2item``'s training queries, so no request is a
training query). A row keeps the user, its history, the target and the request (``requests.jsonl``).

The LLM side asks a trained run with the prompt ``query2item`` trained on (``request_prompt``: ``TEMPLATES
["query2item"][0]`` in the run's prompt format) and, in the request + history mode, the history's codes in front
(``REQUEST_HISTORY_TEMPLATE``). ``check_requests_unseen`` refuses a request file one of whose requests appears in a
tasks build's training rows (a planted or accidental leak), so an evaluated request is never a trained prompt.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.llm.generation import Generator, generate_cached
from alignrec.llm.inert_text import InertText
from recdata.errors import ConfigError, InputFileError, UserError
from sft_tasks.formatting import DEFAULT_PROMPT_FORMAT, item_text
from sft_tasks.query_gen import clean_query
from sft_tasks.templates import (
    HISTORY_SEPARATOR,
    REQUEST_GENERATION_PROMPT,
    REQUEST_HISTORY_TEMPLATE,
    TEMPLATES,
)

logger = logging.getLogger(__name__)

__all__ = ["RequestGenConfig", "build_requests", "check_requests_unseen", "load_requests", "names_title", "normalize_request",
           "request_prompt", "write_requests"]

REQUEST_FIELDS = ("request_id", "part", "user_id", "history", "target", "request")


@dataclass
class RequestGenConfig:
    """``alignrec tasks requests``: LLM-written requests about valid / test targets, an evaluation set."""

    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder whose valid / test targets are described."})
    output_file: str = field(default="", metadata={"help": "JSON lines, one request per line (`alignrec evaluate "
                                                           "--task request --requests_file`)."})
    llm_dir: str = field(default="", metadata={"help": "Local HF causal LM folder; empty = the converted SmolLM2."})
    cache_file: str = field(default="", metadata={"help": "JSON-lines answer cache; empty = output_file + '.cache.jsonl'."})
    per_part: int = field(default=200, metadata={"help": "Requests per part (valid, test): a seeded sample of its "
                                                         "evaluation rows; 0 = every row."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation budget per request (greedy decoding)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    max_description_words: int = field(default=48, metadata={"help": "Description words shown to the LLM."})
    seed: int = field(default=42, metadata={"help": "Seed of the sample of evaluation rows."})

    def __post_init__(self) -> None:
        for name in ("per_part", "max_description_words"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be >= 1")


def build_requests(split: Any, cache_path: str | Path, model_id: str, make_generator: Callable[[], Generator], *,
                   per_part: int = 200, seed: int = 42, max_new_tokens: int = 32, max_description_words: int = 48,
                   chunk: int = 16, parts: Sequence[str] = ("valid", "test"),
                   inert: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """Request rows (``REQUEST_FIELDS``) for a seeded sample of each part's evaluation rows; rows whose answer is
    not a usable one-line request are left out (counted in the log). ``make_generator`` loads only if needed.
    ``inert``: the generator LLM's ``InertText``, applied to the target's text (default: code-token pattern only)."""
    inert = inert or InertText()
    items = split.dataset.item_table()
    fields = ["title", "brand", "categories", "description"]
    rows: list[dict[str, Any]] = []
    for part in parts:
        examples = split.eval_examples(part)
        picked = range(len(examples)) if not per_part or per_part >= len(examples) else \
            sorted(np.random.default_rng(seed).choice(len(examples), per_part, replace=False).tolist())
        for r in picked:
            ex = examples[int(r)]
            rows.append({"request_id": f"{part}-{ex['user_id']}", "part": part, "user_id": ex["user_id"],
                         "history": list(ex["history"]), "target": ex["target"]})
    prompts = {row["request_id"]: REQUEST_GENERATION_PROMPT.format(
        item=inert(item_text(items[row["target"]], fields, max_description_words))) for row in rows}
    result = generate_cached(prompts, Path(cache_path), model_id, make_generator,
                             settings={"max_new_tokens": max_new_tokens, "decoding": "greedy"}, chunk=chunk,
                             desc="requests", id_field="request_id")
    out, named = [], 0
    for row in rows:
        request = clean_query(result.answers.get(row["request_id"], ""), max_words=24)
        if request and names_title(request, str(items[row["target"]].get("title") or "")):
            named += 1  # the answer is in the words: a retriever matches the title, nothing is understood
        elif request:
            out.append({**row, "request": request})
    logger.info("requests: %d of %d evaluation rows got a usable request (%d more named their item's title)",
                len(out), len(rows), named)
    return out


# Words a title shares with any request: articles, the "(1995)" of a film title, "The" moved to the end.
_TITLE_NOISE = re.compile(r"\(\d{4}\)|\b(the|a|an|of|and|in|on|to|for|with|la|le|les|il|der|die|das)\b")


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9']+", _TITLE_NOISE.sub(" ", text.lower())) if len(w) > 1]


def names_title(request: str, title: str, share: float = 0.6) -> bool:
    """Whether ``request`` names its item: the title's words (articles and a year dropped) appear in it as a
    phrase, or ``share`` of them (at least two) appear at all. Such a request tests string matching, not whether
    the model maps a need to an item, so ``build_requests`` leaves it out."""
    words = _content_words(title)
    if not words:
        return False
    said = _content_words(request)
    if re.search(r"\b" + r"\s+".join(map(re.escape, words)) + r"\b", " ".join(said)):
        return True
    said_set = set(said)
    found = sum(w in said_set for w in words)
    return len(words) >= 2 and found >= 2 and found >= share * len(words)


def write_requests(rows: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    from recdata.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({k: row[k] for k in REQUEST_FIELDS}, ensure_ascii=False) + "\n"
                                    for row in rows))


def load_requests(path: str | Path, catalogue: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a requests file; a malformed row, a duplicate id or a target outside ``catalogue`` raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"requests_file {path} does not exist; write it with `alignrec tasks requests`")
    known = set(catalogue) if catalogue is not None else None
    rows, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            missing = [k for k in REQUEST_FIELDS if k not in row]
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not a JSON request row ({exc}); rewrite it with `alignrec tasks "
                            "requests`") from None
        if missing or not str(row["request"]).strip():
            raise UserError(f"{path}:{lineno}: request row lacks {missing or ['a request text']}; rewrite it with "
                            "`alignrec tasks requests`")
        if row["request_id"] in seen:
            raise UserError(f"{path}:{lineno}: duplicate request_id {row['request_id']!r}")
        if known is not None and row["target"] not in known:
            raise UserError(f"{path}:{lineno}: target {row['target']!r} is not in the catalogue; the requests were "
                            "written for another split")
        seen.add(row["request_id"])
        rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no request; write it with `alignrec tasks requests`")
    return rows


def normalize_request(text: str) -> str:
    """Lower case, single spaces: the form the leak check compares."""
    return re.sub(r"\s+", " ", text).strip().lower()


def check_requests_unseen(requests: Iterable[Mapping[str, Any]], train_prompts: Iterable[str], where: str) -> None:
    """Raise ``UserError`` when a request (normalised) occurs inside any training prompt of ``where``."""
    corpus = "\n".join(normalize_request(p) for p in train_prompts)
    for row in requests:
        if normalize_request(row["request"]) in corpus:
            raise UserError(f"request {row['request_id']!r} ({row['request']!r}) appears in the training rows of "
                            f"{where}: the model was trained on it; drop it or rebuild the tasks without it")


def request_prompt(request: str, hf_tokenizer: Any, prompt_format: str = DEFAULT_PROMPT_FORMAT,
                   history: Sequence[str] | None = None, item_tokenizer: Any = None) -> str:
    """The prompt a run is asked ``request`` with: ``query2item``'s first template in the run's format (``codes``
    writes text tasks as ``plain``), with the history's codes in front when ``history`` is given."""
    from sft_tasks.sequential import _formatter

    fmt = _formatter(hf_tokenizer, prompt_format)
    instruction = TEMPLATES["query2item"][0].format(query=fmt.inert(request))  # as build_query2item writes it
    if history:
        if item_tokenizer is None:
            raise ValueError("a request with history needs the item_tokenizer (the history is written as codes)")
        codes = HISTORY_SEPARATOR.join(item_tokenizer.item_to_string(i) for i in history)
        instruction = REQUEST_HISTORY_TEMPLATE.format(history=codes, request=instruction)
    return fmt(instruction)
