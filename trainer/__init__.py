"""LoRA / QLoRA / full SFT of an LLM on alignment tasks (TRL SFTTrainer, DeepSpeed); entry: trainer/sft.py.

Names are imported lazily so ``alignrec --help`` does not pay for importing trl / torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlignRecTrainArguments": "trainer.config",
    "DataArguments": "trainer.config",
    "ModelArguments": "trainer.config",
    "parse_train_config": "trainer.config",
    "load_for_inference": "trainer.export",
    "merge_run": "trainer.export",
    "setup_model": "trainer.model_setup",
    "run_sft": "trainer.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
