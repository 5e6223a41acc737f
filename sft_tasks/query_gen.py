"""Optional LLM-written queries for ``query2item``: the local LLM reads each item's text and writes a search
query. Answers are cached in a JSON-lines file keyed by (model, prompt, decoding settings), so reruns and
interrupted runs only generate what is missing; nothing is fetched from a hub.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from recdata import sha256_file, sha256_json
from sft_tasks.formatting import item_text
from sft_tasks.templates import QUERY_GENERATION_PROMPT

logger = logging.getLogger(__name__)

Generator = Callable[[list[str]], list[str]]


def read_cache(path: Path) -> dict[str, str]:
    """key -> raw answer; a torn last line (interrupted run) is skipped with a warning."""
    cache: dict[str, str] = {}
    if not path.is_file():
        return cache
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                cache[row["key"]] = row["answer"]
            except (json.JSONDecodeError, KeyError):
                logger.warning("%s:%d is not a complete cache entry (interrupted run?); it will be regenerated", path, lineno)
    return cache


def clean_query(answer: str, max_words: int = 16) -> str:
    """First line, without quotes or a 'Query:' label; '' when empty or longer than ``max_words``."""
    line = answer.strip().split("\n")[0].strip()
    if line.lower().startswith("query:"):
        line = line[6:].strip()
    line = line.strip("\"'` ")
    return line if 0 < len(line.split()) <= max_words else ""


def hf_generator(llm_dir: str | Path, max_new_tokens: int = 24, batch_size: int = 16) -> Generator:
    """Greedy decoding with a local HF causal LM (CPU fp32 unless CUDA is available); chat template if any."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def generate(prompts: list[str]) -> list[str]:
        out = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            if tokenizer.chat_template:
                batch = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                       add_generation_prompt=True) for p in batch]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            out.extend(tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        return out

    return generate


def model_fingerprint(llm_dir: str | Path) -> str:
    """Identity of a local model folder: hash of its config and weight-file hashes' names and sizes."""
    llm_dir = Path(llm_dir)
    files = sorted(p for p in llm_dir.iterdir() if p.suffix in (".json", ".safetensors", ".bin"))
    return sha256_json({p.name: sha256_file(p) if p.suffix == ".json" else p.stat().st_size for p in files})


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
) -> dict[str, list[str]]:
    """``{item_id: [query]}`` for items whose cleaned answer is usable; the model loads only if needed."""
    cache_path = Path(cache_path)
    cache = read_cache(cache_path)
    prompts = {i: QUERY_GENERATION_PROMPT.format(item=item_text(items[i], list(fields), max_description_words))
               for i in item_ids}
    keys = {i: sha256_json({"model": model_id, "prompt": p, "settings": settings or {}}) for i, p in prompts.items()}
    todo = [i for i in item_ids if keys[i] not in cache]
    logger.info("query generation: %d cached, %d to generate", len(item_ids) - len(todo), len(todo))
    if todo:
        generator = make_generator()
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_path, "a", encoding="utf-8") as f:
            for start in tqdm(range(0, len(todo), chunk), desc="queries", unit="chunk"):
                batch = todo[start:start + chunk]
                for item_id, answer in zip(batch, generator([prompts[i] for i in batch]), strict=True):
                    cache[keys[item_id]] = answer
                    f.write(json.dumps({"key": keys[item_id], "item_id": item_id, "answer": answer}, ensure_ascii=False) + "\n")
                f.flush()
    out = {}
    for item_id in item_ids:
        query = clean_query(cache[keys[item_id]])
        if query:
            out[item_id] = [query]
    logger.info("query generation: %d of %d items got a usable query", len(out), len(item_ids))
    return out
