"""Deprecated alias (one release): the LLM generator and its answer cache moved to ``alignrec.llm.generation``
(the LLM-features layer; the data layer holds no LLM code). Import from there."""

from __future__ import annotations

import warnings

from alignrec.llm.generation import (
    AnswerCache,
    GenerationResult,
    Generator,
    HFGenerator,
    answer_key,
    budgeted_asker,
    generate_cached,
    hf_generator,
    model_fingerprint,
    read_cache,
)

__all__ = ["AnswerCache", "GenerationResult", "Generator", "HFGenerator", "answer_key", "budgeted_asker",
           "generate_cached", "hf_generator", "model_fingerprint", "read_cache"]

warnings.warn("recdata.llm_generation moved to alignrec.llm.generation; import it from there",
              DeprecationWarning, stacklevel=2)
