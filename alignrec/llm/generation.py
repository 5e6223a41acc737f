"""The one local-LLM text generator and its resumable answer cache, shared by every stage that asks an LLM.

``sft_tasks`` (LLM-written queries), ``knowledge`` (REKI factual / preference knowledge) and the
multi-scenario work all ask a local causal LM many short questions offline. They share:

- ``HFGenerator``: batched greedy decoding with the KV cache, left padding and the chat template; counts
  calls and generated tokens so callers can report what generation cost;
- ``AnswerCache``: a JSON-lines file keyed by ``sha256(prompt + model identity + generation settings)``;
  every answer is appended and flushed as soon as its batch finishes, so a killed run resumes where it
  stopped and never asks a prompt twice (a torn last line is skipped and regenerated);
- ``generate_cached``: the loop tying both together, with a tqdm bar showing tokens/s and a wall-clock
  budget (``max_seconds``) for CPU-bound runs. Identical prompts are asked once.

Nothing is fetched from a hub: the model is a local folder. Moved from ``recdata.llm_generation`` (kept one
release as a deprecated alias): the generator is an LLM feature, not data, so it lives in the LLM-features layer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alignrec.llm.inert_text import InertText
from recdata.io import sha256_file, sha256_json

logger = logging.getLogger(__name__)

__all__ = [
    "AnswerCache",
    "GenerationResult",
    "Generator",
    "HFGenerator",
    "answer_key",
    "budgeted_asker",
    "generate_cached",
    "hf_generator",
    "model_fingerprint",
    "read_cache",
]

Generator = Callable[[list[str]], list[str]]


# ---- cache ----------------------------------------------------------------------------------------------
def answer_key(prompt: str, model_id: str, settings: Mapping[str, Any] | None = None) -> str:
    """Cache key of one answer: the prompt, the model identity and every setting that changes the answer."""
    return sha256_json({"model": model_id, "prompt": prompt, "settings": dict(settings or {})})


def read_cache(path: str | os.PathLike) -> dict[str, str]:
    """key -> raw answer; a torn last line (interrupted run) is skipped with a warning."""
    path = Path(path)
    cache: dict[str, str] = {}
    if not path.is_file():
        return cache
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                cache[row["key"]] = row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s:%d is not a complete cache entry (interrupted run?); it will be regenerated",
                               path, lineno)
    return cache


class AnswerCache:
    """Append-only JSON-lines answer store: ``key in cache``, ``cache[key]``, ``cache.put(key, answer, **meta)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.answers = read_cache(self.path)
        self._file = None

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def __getitem__(self, key: str) -> str:
        return self.answers[key]

    def __len__(self) -> int:
        return len(self.answers)

    def put(self, key: str, answer: str, **meta: Any) -> None:
        """Store and append one answer (flushed by ``flush``/``close``; a kill loses at most the open batch)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if self._file.tell() and not self._ends_with_newline():
                self._file.write("\n")  # a torn last line must not swallow the next entry
        self.answers[key] = answer
        self._file.write(json.dumps({"key": key, **meta, "answer": answer}, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


# ---- model ----------------------------------------------------------------------------------------------
def model_fingerprint(llm_dir: str | os.PathLike) -> str:
    """Identity of a local model folder: hash of its JSON files and the sizes of its weight files."""
    llm_dir = Path(llm_dir)
    if not llm_dir.is_dir():
        from recdata.errors import InputFileError

        raise InputFileError(f"LLM folder {llm_dir} does not exist; pass a local HF causal LM folder")
    files = sorted(p for p in llm_dir.iterdir() if p.suffix in (".json", ".safetensors", ".bin"))
    return sha256_json({p.name: sha256_file(p) if p.suffix == ".json" else p.stat().st_size for p in files})


class HFGenerator:
    """Greedy decoding with a local HF causal LM (fp32 on CPU, bf16 on CUDA), batched, left-padded.

    Prompts are plain user messages; the tokenizer's chat template wraps them when it has one. ``calls``,
    ``prompt_tokens``, ``generated_tokens`` (up to and including the first end-of-sequence token) and
    ``seconds`` accumulate over calls: the cost report reads them.
    """

    def __init__(self, llm_dir: str | os.PathLike, max_new_tokens: int = 48, batch_size: int = 16,
                 device: str | None = None, system_prompt: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_new_tokens, self.batch_size, self.system_prompt = max_new_tokens, batch_size, system_prompt
        self.tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), padding_side="left", local_files_only=True)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=dtype, local_files_only=True)
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.inert = InertText(self.tokenizer)  # a user message is data: it never holds this model's control tokens
        self.calls = self.prompt_tokens = self.generated_tokens = 0
        self.seconds = 0.0

    def format(self, prompt: str) -> str:
        """The text the model reads for one prompt (chat template + generation prompt when there is one); the prompt
        is escaped first (``alignrec.llm.inert_text``), so no text in it becomes a special or control token."""
        prompt = self.inert(prompt)
        if not self.tokenizer.chat_template:
            return prompt
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, prompts: list[str]) -> list[str]:
        import torch

        out: list[str] = []
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(prompts), self.batch_size):
            batch = [self.format(p) for p in prompts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            began = time.perf_counter()
            with torch.no_grad():  # generate() uses the KV cache by default
                ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, use_cache=True,
                                          pad_token_id=self.tokenizer.pad_token_id)
            self.seconds += time.perf_counter() - began
            new = ids[:, enc["input_ids"].shape[1]:]  # [batch, generated]
            self.calls += len(batch)
            self.prompt_tokens += int(enc["attention_mask"].sum())
            self.generated_tokens += sum(_generated_length(row.tolist(), eos) for row in new)
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out


def _generated_length(row: list[int], eos: int | None) -> int:
    """Tokens a row really generated: up to and including the first EOS (the rest is padding)."""
    if eos is not None and eos in row:
        return row.index(eos) + 1
    return len(row)


def hf_generator(llm_dir: str | os.PathLike, max_new_tokens: int = 24, batch_size: int = 16) -> HFGenerator:
    """Shorthand kept for callers of the former ``sft_tasks.query_gen.hf_generator``."""
    return HFGenerator(llm_dir, max_new_tokens=max_new_tokens, batch_size=batch_size)


# ---- the loop -------------------------------------------------------------------------------------------
@dataclass
class GenerationResult:
    """``answers[name]`` for every prompt that has one; ``complete`` False when ``max_seconds`` stopped it."""

    answers: dict[str, str]
    complete: bool
    stats: dict[str, Any] = field(default_factory=dict)


def generate_cached(
    prompts: Mapping[str, str],
    cache_path: str | os.PathLike,
    model_id: str,
    make_generator: Callable[[], Generator],
    settings: Mapping[str, Any] | None = None,
    chunk: int = 64,
    max_seconds: float = 0.0,
    desc: str = "generation",
    id_field: str = "id",
) -> GenerationResult:
    """Answer ``{name: prompt}`` from the cache, generating only what is missing (the model loads only then).

    ``settings`` must hold every decoding setting that changes an answer (it is part of the key).
    ``max_seconds`` > 0 stops after the chunk that crosses the budget; a rerun resumes from the cache.
    ``stats``: prompts, unique prompts, cached, generated (LLM calls), generated tokens, seconds, tokens/s.
    """
    cache = AnswerCache(cache_path)
    keys = {name: answer_key(prompt, model_id, settings) for name, prompt in prompts.items()}
    todo: dict[str, str] = {}  # key -> name of the first prompt with that key
    for name, key in keys.items():
        if key not in cache and key not in todo:
            todo[key] = name
    unique = len(set(keys.values()))
    logger.info("%s: %d prompts (%d unique), %d cached, %d to generate", desc, len(prompts), unique,
                unique - len(todo), len(todo))
    started = time.perf_counter()
    tokens = 0
    complete = True
    if todo:
        generator = make_generator()
        pending = list(todo.items())
        bar = tqdm(total=len(pending), desc=desc, unit="prompt")
        try:
            for start in range(0, len(pending), chunk):
                batch = pending[start:start + chunk]
                before = getattr(generator, "generated_tokens", 0)
                answers = generator([prompts[name] for _, name in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"generator returned {len(answers)} answers for {len(batch)} prompts")
                for (key, name), answer in zip(batch, answers, strict=True):
                    cache.put(key, answer, **{id_field: name})
                cache.flush()
                tokens += getattr(generator, "generated_tokens", 0) - before
                elapsed = time.perf_counter() - started
                bar.update(len(batch))
                bar.set_postfix({"tok/s": round(tokens / elapsed, 1) if elapsed else 0.0})
                if max_seconds and elapsed > max_seconds and start + chunk < len(pending):
                    complete = False
                    logger.warning("%s: time budget of %.0f s reached after %d of %d prompts; rerun the same "
                                   "command to resume from %s", desc, max_seconds, start + len(batch),
                                   len(pending), cache.path)
                    break
        finally:
            bar.close()
            cache.close()
    seconds = time.perf_counter() - started
    answers = {name: cache[key] for name, key in keys.items() if key in cache}
    stats = {"prompts": len(prompts), "unique_prompts": unique, "cached": unique - len(todo),
             "llm_calls": len(todo) if complete else sum(1 for k in todo if k in cache),
             "generated_tokens": tokens, "seconds": round(seconds, 2),
             "tokens_per_second": round(tokens / seconds, 2) if todo and seconds else None}
    return GenerationResult(answers, complete and len(answers) == len(prompts), stats)


def budgeted_asker(command: str, cache_path: str | os.PathLike, model_id: str,
                   make_generator: Callable[[], Generator], settings: Mapping[str, Any] | None = None,
                   chunk: int = 64, max_seconds: float = 0.0) -> Callable[[Mapping[str, str], str], GenerationResult]:
    """``ask(prompts, desc)``: ``generate_cached`` with one lazily loaded generator shared by every call.

    The model loads at most once, and only when some answer is not cached; a call the time budget cut short
    raises one ``UserError`` line naming ``command``, the counts and the cache to resume from.
    """
    from recdata.errors import UserError

    loaded: list[Generator] = []

    def generator() -> Generator:
        if not loaded:
            loaded.append(make_generator())
        return loaded[0]

    def ask(prompts: Mapping[str, str], desc: str) -> GenerationResult:
        result = generate_cached(prompts, cache_path, model_id, generator, settings=settings, chunk=chunk,
                                 max_seconds=max_seconds, desc=desc)
        if not result.complete:
            raise UserError(f"{command}: the time budget (max_seconds={max_seconds}) ran out after "
                            f"{len(result.answers)} of {len(prompts)} {desc} prompts; rerun the same command to "
                            f"resume from {cache_path}")
        return result

    return ask
