"""LoRA / QLoRA / full SFT of an LLM on alignment tasks (TRL SFTTrainer, DeepSpeed); entry: trainer/sft.py.

Names are imported lazily so ``alignrec --help`` does not pay for importing trl / torch.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "AlignRecTrainArguments": "trainer.config",
    "DataArguments": "trainer.config",
    "ModelArguments": "trainer.config",
    "parse_train_config": "trainer.config",
    "has_item_head": "trainer.item_head",
    "load_for_inference": "trainer.export",
    "merge_run": "trainer.export",
    "read_item_head_weight": "trainer.item_head",
    "read_prompt_format": "trainer.export",
    "read_user_knowledge": "trainer.export",
    "setup_model": "trainer.model_setup",
    "run_sft": "trainer.train",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
