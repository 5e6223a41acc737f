"""Alignment tasks (stage two): seqrec, item2code/code2item, fusion, query2item and negative-sampling tasks,
mixed by explicit weights into a TRL prompt-completion ``DatasetDict`` (train, validation).

Names are imported lazily (PEP 562) so ``alignrec --help`` does not pay for importing datasets / torch.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "TASK_NAMES": "sft_tasks.config",
    "ListTask": "sft_tasks.base",
    "NegativeSampler": "sft_tasks.negatives",
    "PromptFormatter": "sft_tasks.formatting",
    "QueryGenConfig": "sft_tasks.config",
    "Task": "sft_tasks.base",
    "TaskBuild": "sft_tasks.builder",
    "TaskConfig": "sft_tasks.config",
    "TaskMixture": "sft_tasks.base",
    "USER_KNOWLEDGE_FILE": "sft_tasks.context",
    "build_preference_dataset": "sft_tasks.builder",
    "build_task_datasets": "sft_tasks.builder",
    "build_tasks": "sft_tasks.builder",
    "check_build_item_tokenizer": "sft_tasks.builder",
    "compute_stats": "sft_tasks.builder",
    "PROMPT_FORMATS": "sft_tasks.formatting",
    "TASKS_MANIFEST_FILE": "sft_tasks.builder",
    "read_build_cold_items": "sft_tasks.builder",
    "read_build_prompt_format": "sft_tasks.builder",
    "read_build_user_knowledge": "sft_tasks.context",
    "read_build_user_tokens": "sft_tasks.builder",
    "add_user_tokens": "sft_tasks.user_tokens",
    "is_user_token": "sft_tasks.user_tokens",
    "USER_TOKENS_KEY": "sft_tasks.user_tokens",
    "save_task_build": "sft_tasks.builder",
    "RequestGenConfig": "sft_tasks.requests",
    "build_requests": "sft_tasks.requests",
    "item_text": "sft_tasks.formatting",
    "check_requests_unseen": "sft_tasks.requests",
    "load_requests": "sft_tasks.requests",
    "request_prompt": "sft_tasks.requests",
    "write_requests": "sft_tasks.requests",
    "seqrec_prompt": "sft_tasks.sequential",
    "seqrec_scenario_prompt": "sft_tasks.sequential",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
