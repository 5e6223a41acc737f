"""Alignment tasks (stage two): seqrec, item2code/code2item, fusion, query2item and negative-sampling tasks,
mixed by explicit weights into a TRL prompt-completion ``DatasetDict`` (train, validation)."""

from sft_tasks.base import ListTask, Task, TaskMixture
from sft_tasks.builder import (
    TaskBuild,
    build_preference_dataset,
    build_task_datasets,
    build_tasks,
    compute_stats,
    save_task_build,
)
from sft_tasks.config import TASK_NAMES, QueryGenConfig, TaskConfig
from sft_tasks.formatting import PromptFormatter
from sft_tasks.negatives import NegativeSampler
from sft_tasks.sequential import seqrec_prompt, seqrec_scenario_prompt

__all__ = [
    "TASK_NAMES",
    "ListTask",
    "NegativeSampler",
    "PromptFormatter",
    "QueryGenConfig",
    "Task",
    "TaskBuild",
    "TaskConfig",
    "TaskMixture",
    "build_preference_dataset",
    "build_task_datasets",
    "build_tasks",
    "compute_stats",
    "save_task_build",
    "seqrec_prompt",
    "seqrec_scenario_prompt",
]
