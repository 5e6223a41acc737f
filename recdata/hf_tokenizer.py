"""Deprecated alias (one release): the HF tokenizer loader moved to ``alignrec.llm.hf_tokenizer`` (the
LLM-features layer; the data layer holds no LLM code). Import from there."""

from __future__ import annotations

import warnings

from alignrec.llm.hf_tokenizer import CODES_ONLY, build_codes_only_tokenizer, load_hf_tokenizer

__all__ = ["CODES_ONLY", "build_codes_only_tokenizer", "load_hf_tokenizer"]

warnings.warn("recdata.hf_tokenizer moved to alignrec.llm.hf_tokenizer; import it from there",
              DeprecationWarning, stacklevel=2)
