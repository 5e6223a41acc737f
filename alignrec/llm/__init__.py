"""LLM wrappers every LLM-derived feature shares: the HF tokenizer loader, the cached local generator and the
frozen text encoders.

The lowest part of the LLM-features layer (``recdata`` -> ``alignrec.recommenders`` -> ``alignrec.llm`` ->
``alignrec.knowledge`` -> ``alignrec.llm4msr`` -> ``tokenization`` -> ...): the knowledge stages, the query
task (``sft_tasks.query_gen``), the tokenizer's text embeddings and the trainer all import it; it imports only
``recdata``. Names are imported lazily so ``alignrec --help`` does not pay for torch / transformers.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "CODES_ONLY": "alignrec.llm.hf_tokenizer",
    "build_codes_only_tokenizer": "alignrec.llm.hf_tokenizer",
    "load_hf_tokenizer": "alignrec.llm.hf_tokenizer",
    "InertText": "alignrec.llm.inert_text",
    "inert_text": "alignrec.llm.inert_text",
    "llm_inert_text": "alignrec.llm.inert_text",
    "AnswerCache": "alignrec.llm.generation",
    "GenerationResult": "alignrec.llm.generation",
    "Generator": "alignrec.llm.generation",
    "HFGenerator": "alignrec.llm.generation",
    "answer_key": "alignrec.llm.generation",
    "budgeted_asker": "alignrec.llm.generation",
    "generate_cached": "alignrec.llm.generation",
    "hf_generator": "alignrec.llm.generation",
    "model_fingerprint": "alignrec.llm.generation",
    "read_cache": "alignrec.llm.generation",
    "encode_llm": "alignrec.llm.text_encoders",
    "encode_sentence": "alignrec.llm.text_encoders",
    "mean_pool_hidden": "alignrec.llm.text_encoders",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
