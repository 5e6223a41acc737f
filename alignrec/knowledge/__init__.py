"""REKI / KAR knowledge augmentation: LLM factual + preference knowledge -> prestored augmented vectors.

``extract`` (factorization prompting, individual or collective, cost report) -> ``encode`` (frozen text
encoder) -> ``train`` ("SASRec + knowledge" with the hybrid-expert adaptor, in ``alignrec.recommenders``).
Online inference reads the prestored vectors only; it never calls the LLM.
"""

from alignrec.knowledge.config import EncodeConfig, ExtractConfig, KnowledgeTrainConfig
from alignrec.knowledge.encode import encode_knowledge, load_knowledge_vectors, load_user_history_items
from alignrec.knowledge.extract import (
    build_prompts,
    extract_knowledge,
    read_knowledge,
    read_user_history_items,
    user_training_histories,
)

__all__ = [
    "EncodeConfig",
    "ExtractConfig",
    "KnowledgeTrainConfig",
    "build_prompts",
    "encode_knowledge",
    "extract_knowledge",
    "load_knowledge_vectors",
    "load_user_history_items",
    "read_knowledge",
    "read_user_history_items",
    "user_training_histories",
]
