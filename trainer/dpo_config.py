"""Preference (DPO) configs: our ``PreferenceArguments`` next to trl's ``DPOConfig`` (reused, not re-declared) and
the SFT run's ``AlignRecTrainArguments`` (precision, merge, loss curve, TensorBoard).

``parse_dpo_config(argv)`` parses the three with ``recdata.config.parse_config`` (YAML via ``--config``, flags win,
unknown keys raise); ``beta``, ``loss_type``, ``learning_rate``, ``max_steps`` ... are DPOConfig's own fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from trl import DPOConfig

from recdata.config import parse_config
from recdata.errors import ConfigError
from trainer.config import AlignRecTrainArguments

__all__ = ["PreferenceArguments", "parse_dpo_config"]


@dataclass
class PreferenceArguments:
    """What DPO starts from and trains on."""

    sft_run_dir: str = field(
        default="", metadata={"help": "Finished SFT run folder (trainer/sft.py output_dir: LoRA/QLoRA adapter or full "
                                      "model). It is both the starting point and, frozen, the DPO reference model."}
    )
    pairs_dir: str = field(
        default="", metadata={"help": "Saved preference pairs: a Dataset, or a DatasetDict with 'train' (and "
                                      "'validation'); columns prompt, chosen, rejected (sft_tasks.preference)."}
    )
    max_train_pairs: int = field(default=0, metadata={"help": "Cap on training pairs, for smoke runs (0 = all)."})
    max_eval_pairs: int = field(default=512, metadata={"help": "Cap on held-out pairs (0 = no cap)."})
    # Ranking validation as in SFT (inference.ranking_validation; same field names as DataArguments').
    ranking_dataset_dir: str = field(
        default="", metadata={"help": "Task DatasetDict whose 'validation' split (prompt, history, target: valid "
                                      "targets only) feeds ranking validation; the pipeline fills it."}
    )
    ranking_eval_users: int = field(
        default=0, metadata={"help": "Ranking validation: constrained beam search for this many valid users at every "
                                     "evaluation (eval_ranking_recall@10 / eval_ranking_ndcg@10). 0 = off."}
    )
    ranking_eval_beams: int = field(default=20, metadata={"help": "Ranking validation: beam width (>= 10)."})
    ranking_eval_exclude_history: bool = field(
        default=True, metadata={"help": "Ranking validation: never recommend history items (as evaluation does)."}
    )

    def __post_init__(self) -> None:
        if not self.sft_run_dir or not self.pairs_dir:
            raise ConfigError("sft_run_dir and pairs_dir are required (flags --sft_run_dir / --pairs_dir or YAML keys)")
        if self.max_train_pairs < 0 or self.max_eval_pairs < 0 or self.ranking_eval_users < 0:
            raise ConfigError("max_train_pairs, max_eval_pairs and ranking_eval_users must be >= 0")
        if self.ranking_eval_users and not self.ranking_dataset_dir:
            raise ConfigError("ranking_eval_users needs ranking_dataset_dir (the tasks DatasetDict with 'validation')")
        if self.ranking_eval_beams < 10:
            raise ConfigError(f"ranking_eval_beams must be >= 10 (the metrics are @10), got {self.ranking_eval_beams}")


def parse_dpo_config(
    argv: Sequence[str] | None = None,
) -> tuple[PreferenceArguments, AlignRecTrainArguments, DPOConfig]:
    """Parse flags / ``--config`` YAML. As for SFT, CPU defaults go in underneath (DPOConfig's bf16 default would be
    rejected without CUDA)."""
    cpu_defaults = {} if torch.cuda.is_available() else {"bf16": False, "use_cpu": True}
    return parse_config([PreferenceArguments, AlignRecTrainArguments, DPOConfig], argv,
                        config=cpu_defaults, config_source="--config / flags")
