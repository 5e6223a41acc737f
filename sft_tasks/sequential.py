"""Sequential tasks: ``seqrec`` (codes -> next code), ``seqrec_full`` (a whole code sequence, loss on every item),
``fusion`` (titles <-> codes), and the validation set.

With ``TaskConfig.scenario_prompts`` the seqrec and validation prompts name the target scenario and tag history
items by scenario (``seqrec_scenario_prompt`` is the matching inference prompt); the other tasks are unchanged.
"""

from __future__ import annotations

from typing import Any

import datasets

from sft_tasks.base import FEATURES, ListTask
from sft_tasks.context import TaskContext, scenario_history_text
from sft_tasks.formatting import PromptFormatter
from sft_tasks.templates import HISTORY_SEPARATOR, TEMPLATES, USER_KNOWLEDGE_TEMPLATE

VALIDATION_FEATURES = datasets.Features({
    **FEATURES, "user_id": datasets.Value("string"), "history": datasets.Sequence(datasets.Value("string")),
    "target": datasets.Value("string"),
})
_FORMATTERS: dict[tuple[int, str | None], PromptFormatter] = {}


def _formatter(hf_tokenizer: Any) -> PromptFormatter:
    key = (id(hf_tokenizer), getattr(hf_tokenizer, "chat_template", None))
    if key not in _FORMATTERS:
        _FORMATTERS.clear()  # one tokenizer at a time; never keep stale ones alive
        _FORMATTERS[key] = PromptFormatter(hf_tokenizer)
    return _FORMATTERS[key]


def _knowledge_prefix(user_knowledge: str | None) -> str:
    return USER_KNOWLEDGE_TEMPLATE.format(knowledge=user_knowledge) if user_knowledge else ""


def seqrec_instruction(history_codes: str, template_index: int = 0, user_knowledge: str | None = None) -> str:
    options = TEMPLATES["seqrec"]
    if not 0 <= template_index < len(options):
        raise ValueError(f"template_index must be in [0, {len(options)}), got {template_index}")
    return _knowledge_prefix(user_knowledge) + options[template_index].format(history=history_codes)


def seqrec_prompt(history: list[str], item_tokenizer: Any, hf_tokenizer: Any, template_index: int = 0,
                  user_knowledge: str | None = None) -> str:
    """The exact prompt ``seqrec`` trains on for ``history`` (oldest first; truncate before calling).

    ``user_knowledge``: the user's knowledge text when the tasks were built with ``user_knowledge_dir``
    (already cut to ``user_knowledge_words``). The expected completion is ``item_tokenizer.item_to_string(target)``.
    """
    if not history:
        raise ValueError("seqrec_prompt needs a non-empty history; a user with no items has nothing to condition on")
    codes = HISTORY_SEPARATOR.join(item_tokenizer.item_to_string(i) for i in history)
    return _formatter(hf_tokenizer)(seqrec_instruction(codes, template_index, user_knowledge))


def seqrec_scenario_instruction(history_text: str, scenario: str, template_index: int = 0,
                                user_knowledge: str | None = None) -> str:
    options = TEMPLATES["seqrec_scenario"]
    if not 0 <= template_index < len(options):
        raise ValueError(f"template_index must be in [0, {len(options)}), got {template_index}")
    return _knowledge_prefix(user_knowledge) + options[template_index].format(history=history_text, scenario=scenario)


def seqrec_scenario_prompt(history: list[str], history_scenarios: list[str], target_scenario: str,
                           item_tokenizer: Any, hf_tokenizer: Any, template_index: int = 0,
                           user_knowledge: str | None = None) -> str:
    """The exact prompt ``seqrec`` trains on with ``scenario_prompts``: it names ``target_scenario`` and tags
    each history item with its scenario (``history_scenarios``, aligned with ``history``); ``user_knowledge`` as
    in ``seqrec_prompt``."""
    if not history:
        raise ValueError("seqrec_scenario_prompt needs a non-empty history")
    text = scenario_history_text([item_tokenizer.item_to_string(i) for i in history], history_scenarios)
    return _formatter(hf_tokenizer)(seqrec_scenario_instruction(text, target_scenario, template_index, user_knowledge))


def _window_instruction(ctx: TaskContext, user_id: str, history, target_scenario: str, history_scenarios,
                        index: int, position: int | None = None) -> str:
    """The seqrec instruction of one window: scenario-naming with ``scenario_prompts``, user knowledge if built
    (and if it did not read this training target; evaluation rows pass no ``position``)."""
    knowledge = ctx.knowledge(user_id, position)
    if ctx.cfg.scenario_prompts:
        return seqrec_scenario_instruction(ctx.tagged_codes_text(history, history_scenarios), target_scenario, index,
                                           knowledge)
    return seqrec_instruction(ctx.codes_text(history), index, knowledge)


def build_seqrec(ctx: TaskContext) -> ListTask:
    n_templates = len(ctx.templates("seqrec_scenario" if ctx.cfg.scenario_prompts else "seqrec"))
    choice = ctx.rng("seqrec").integers(0, n_templates, size=len(ctx.windows))
    prompts = [ctx.format(_window_instruction(ctx, w.user_id, w.history, w.target_scenario, w.history_scenarios,
                                              int(t), w.position))
               for w, t in zip(ctx.windows, choice, strict=True)]
    return ListTask("seqrec", prompts, [ctx.code[w.target] for w in ctx.windows], [w.user_id for w in ctx.windows])


def full_sequence_windows(items: list[str], max_items: int) -> list[list[str]]:
    """Cut a training sequence into windows of at most ``max_items`` items from its end, overlapping by one.

    Every transition ``items[i-1] -> items[i]`` is supervised exactly once (as SASRec's training windows), and
    the last window carries the most recent items, as the evaluation histories do.
    """
    out, end = [], len(items)
    while end >= 2:
        start = max(0, end - max_items)
        out.append(items[start:end])
        end = start + 1
    return out[::-1]


def build_seqrec_full(ctx: TaskContext) -> ListTask:
    """Whole-sequence training for codes-only models: prompt = the first item, completion = every later item.

    With completion-only loss this is a causal loss on every item's codes in one forward pass (what SASRec
    does), ~``max_history`` times less compute per supervised item than one window per target. The prompt of
    a window equals the seqrec prompt of its first item under the ``codes_only`` tokenizer (text is erased),
    so inference is unchanged. Text tokenizers would see a format they are never prompted with: refused.
    """
    from recdata.hf_tokenizer import CODES_ONLY

    if getattr(ctx.format.hf_tokenizer, "name_or_path", "") != CODES_ONLY:
        from recdata.errors import ConfigError

        raise ConfigError("task seqrec_full is for codes-only models (train.tokenizer_name_or_path: codes_only); "
                          "text LLMs train on seqrec windows instead")
    prompts, completions, users = [], [], []
    for user_id, items in ctx.train_sequences:
        for window in full_sequence_windows(list(items), ctx.max_history + 1):
            prompts.append(ctx.format(seqrec_instruction(ctx.code[window[0]])))
            completions.append(HISTORY_SEPARATOR.join(ctx.code[i] for i in window[1:]))
            users.append(user_id)
    return ListTask("seqrec_full", prompts, completions, users)


def build_fusion(ctx: TaskContext) -> ListTask:
    """Two examples per window: titles -> next code, then codes -> next title."""
    t2c, c2t = ctx.templates("fusion_title2code"), ctx.templates("fusion_code2title")
    rng = ctx.rng("fusion")
    pick_a = rng.integers(0, len(t2c), size=len(ctx.windows))
    pick_b = rng.integers(0, len(c2t), size=len(ctx.windows))
    prompts, completions, users = [], [], []
    for w, a, b in zip(ctx.windows, pick_a, pick_b, strict=True):
        prompts.append(ctx.format(t2c[a].format(history=ctx.titles_text(w.history))))
        completions.append(ctx.code[w.target])
        users.append(w.user_id)
        title = ctx.items[w.target]["title"].strip()
        if title:
            prompts.append(ctx.format(c2t[b].format(history=ctx.codes_text(w.history))))
            completions.append(title)
            users.append(w.user_id)
    return ListTask("fusion", prompts, completions, users)


def build_validation(ctx: TaskContext) -> datasets.Dataset:
    """``seqrec`` on the valid targets (history = everything before the target, truncated)."""
    examples = ctx.split.eval_examples("valid")
    index = ctx.cfg.validation_template_index
    prompts, completions, histories = [], [], []
    scen = ctx.cfg.scenario_prompts
    targets_scen = examples["target_scenario"] if scen else [""] * len(examples)
    history_scen = examples["history_scenarios"] if scen else [[]] * len(examples)
    for user_id, history, target, t_scen, h_scen in zip(examples["user_id"], examples["history"], examples["target"],
                                                         targets_scen, history_scen, strict=True):
        history, h_scen = history[-ctx.max_history:], h_scen[-ctx.max_history:]
        prompts.append(ctx.format(_window_instruction(ctx, user_id, history, t_scen, h_scen, index)))
        completions.append(ctx.code[target])
        histories.append(list(history))
    # user_id / history / target let the trainer's ranking validation rank the valid targets (never test ones)
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "completion": completions, "task": ["seqrec"] * len(prompts),
         "user_id": list(examples["user_id"]), "history": histories, "target": list(examples["target"])},
        features=VALIDATION_FEATURES,
    )
