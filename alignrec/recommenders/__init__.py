"""Dense recommenders: one interface (``DenseRecommender``), one SASRec with extension points, LEARN towers.

Depends only on ``recdata`` and torch, so the tokenizer (item vectors), the evaluation (rows) and the pipeline
all read them from here and data flows one way. See ``base.py`` for the interface.
"""

from alignrec.recommenders.base import (
    DenseRecommender,
    EpochCheckpoint,
    as_recommend_fn,
    full_ranking_metrics,
    train_with_early_stopping,
)
from alignrec.recommenders.knowledge_adaptor import HybridExpertAdaptor
from alignrec.recommenders.knowledge_sasrec import KnowledgeSASRec, load_augmented
from alignrec.recommenders.learn import LEARN, train_learn
from alignrec.recommenders.learn_config import LEARNConfig
from alignrec.recommenders.meta_layers import MetaLayerGenerator, ScenarioTowers
from alignrec.recommenders.sasrec import (
    CausalBlock,
    SASRec,
    length_bucketed_batches,
    train_sasrec,
    training_windows,
)
from alignrec.recommenders.sasrec_config import SASRecConfig
from alignrec.recommenders.scenario_sasrec import LLM4MSRSASRec, ScenarioSASRec

__all__ = [
    "LEARN",
    "CausalBlock",
    "DenseRecommender",
    "EpochCheckpoint",
    "HybridExpertAdaptor",
    "KnowledgeSASRec",
    "LEARNConfig",
    "LLM4MSRSASRec",
    "MetaLayerGenerator",
    "SASRec",
    "SASRecConfig",
    "ScenarioSASRec",
    "ScenarioTowers",
    "as_recommend_fn",
    "full_ranking_metrics",
    "length_bucketed_batches",
    "load_augmented",
    "train_learn",
    "train_sasrec",
    "train_with_early_stopping",
    "training_windows",
]
