"""Sequential tasks: ``seqrec`` (codes -> next code), ``seqrec_full`` (a whole code sequence, loss on every item),
``fusion`` (titles <-> codes), and the validation set.

With ``TaskConfig.scenario_prompts`` the seqrec and validation prompts name the target scenario and tag history
items by scenario (``seqrec_scenario_prompt`` is the matching inference prompt); the other tasks are unchanged.
With ``TaskConfig.prompt_format: codes`` the seqrec, seqrec_full and validation prompts are the codes alone
(``sft_tasks.formatting.codes_prompt``), and ``seqrec_prompt(..., prompt_format="codes")`` decodes the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np

from sft_tasks.base import FEATURES, ListTask, Task, rows_to_dataset
from sft_tasks.context import TaskContext, scenario_history_text
from sft_tasks.formatting import DEFAULT_PROMPT_FORMAT, PromptFormatter, check_prompt_format, codes_prompt
from sft_tasks.templates import HISTORY_SEPARATOR, TEMPLATES, USER_KNOWLEDGE_TEMPLATE
from sft_tasks.user_tokens import is_user_token

VALIDATION_FEATURES = datasets.Features({
    **FEATURES, "user_id": datasets.Value("string"), "history": datasets.Sequence(datasets.Value("string")),
    "target": datasets.Value("string"),
})
_FORMATTERS: dict[tuple[int, str | None, str], PromptFormatter] = {}


def _formatter(hf_tokenizer: Any, prompt_format: str = DEFAULT_PROMPT_FORMAT) -> PromptFormatter:
    key = (id(hf_tokenizer), getattr(hf_tokenizer, "chat_template", None), prompt_format)
    if key not in _FORMATTERS:
        _FORMATTERS.clear()  # one tokenizer at a time; never keep stale ones alive
        _FORMATTERS[key] = PromptFormatter(hf_tokenizer, prompt_format)
    return _FORMATTERS[key]


def _knowledge_prefix(user_knowledge: str | None) -> str:
    """The text in front of a user's prompt: their knowledge line, or their user token alone (``user_tokens``)."""
    if not user_knowledge:
        return ""
    return user_knowledge if is_user_token(user_knowledge) else USER_KNOWLEDGE_TEMPLATE.format(knowledge=user_knowledge)


def _inert_knowledge(fmt: PromptFormatter, user_knowledge: str | None) -> str | None:
    """Knowledge text made inert as the tasks build did; a user token (``user_tokens``) is the one added token a
    prompt may carry, so it is kept."""
    return fmt.inert(user_knowledge) if user_knowledge and not is_user_token(user_knowledge) else user_knowledge


def seqrec_instruction(history_codes: str, template_index: int = 0, user_knowledge: str | None = None) -> str:
    options = TEMPLATES["seqrec"]
    if not 0 <= template_index < len(options):
        raise ValueError(f"template_index must be in [0, {len(options)}), got {template_index}")
    return _knowledge_prefix(user_knowledge) + options[template_index].format(history=history_codes)


def seqrec_prompt(history: list[str], item_tokenizer: Any, hf_tokenizer: Any, template_index: int = 0,
                  user_knowledge: str | None = None, prompt_format: str = DEFAULT_PROMPT_FORMAT) -> str:
    """The exact prompt ``seqrec`` trains on for ``history`` (oldest first; truncate before calling).

    ``user_knowledge``: the user's knowledge text when the tasks were built with ``user_knowledge_dir``
    (already cut to ``user_knowledge_words``). ``prompt_format``: the tasks build's (a run's manifest records it;
    ``codes`` ignores ``template_index``). The expected completion is ``item_tokenizer.item_to_string(target)``.
    """
    if not history:
        raise ValueError("seqrec_prompt needs a non-empty history; a user with no items has nothing to condition on")
    fmt = _formatter(hf_tokenizer, check_prompt_format(prompt_format))
    user_knowledge = _inert_knowledge(fmt, user_knowledge)
    if prompt_format == "codes":
        return codes_prompt([item_tokenizer.item_to_string(i) for i in history], hf_tokenizer,
                            _knowledge_prefix(user_knowledge))
    codes = HISTORY_SEPARATOR.join(item_tokenizer.item_to_string(i) for i in history)
    return fmt(seqrec_instruction(codes, template_index, user_knowledge))


def seqrec_scenario_instruction(history_text: str, scenario: str, template_index: int = 0,
                                user_knowledge: str | None = None) -> str:
    options = TEMPLATES["seqrec_scenario"]
    if not 0 <= template_index < len(options):
        raise ValueError(f"template_index must be in [0, {len(options)}), got {template_index}")
    return _knowledge_prefix(user_knowledge) + options[template_index].format(history=history_text, scenario=scenario)


def seqrec_scenario_prompt(history: list[str], history_scenarios: list[str], target_scenario: str,
                           item_tokenizer: Any, hf_tokenizer: Any, template_index: int = 0,
                           user_knowledge: str | None = None, prompt_format: str = DEFAULT_PROMPT_FORMAT) -> str:
    """The exact prompt ``seqrec`` trains on with ``scenario_prompts``: it names ``target_scenario`` and tags
    each history item with its scenario (``history_scenarios``, aligned with ``history``); ``user_knowledge`` and
    ``prompt_format`` (chat or plain: a scenario is named in text) as in ``seqrec_prompt``."""
    if not history:
        raise ValueError("seqrec_scenario_prompt needs a non-empty history")
    if check_prompt_format(prompt_format) == "codes":
        raise ValueError("scenario prompts name the target scenario in text; prompt_format codes has no text: "
                         "use chat or plain")
    fmt = _formatter(hf_tokenizer, prompt_format)
    inert = fmt.inert  # data text stays text, as the tasks build made it
    text = scenario_history_text([item_tokenizer.item_to_string(i) for i in history],
                                 [inert(s) for s in history_scenarios])
    return fmt(seqrec_scenario_instruction(text, inert(target_scenario), template_index,
                                           _inert_knowledge(fmt, user_knowledge)))


def _window_instruction(ctx: TaskContext, user_id: str, history, target_scenario: str, history_scenarios,
                        index: int, position: int | None = None) -> str:
    """The seqrec instruction of one window: scenario-naming with ``scenario_prompts``, user knowledge if built
    (and if it did not read this training target; evaluation rows pass no ``position``)."""
    knowledge = ctx.knowledge(user_id, position)
    if ctx.cfg.scenario_prompts:
        return seqrec_scenario_instruction(ctx.tagged_codes_text(history, history_scenarios),
                                           ctx.format.inert(target_scenario), index, knowledge)
    return seqrec_instruction(ctx.codes_text(history), index, knowledge)


def seqrec_window_prompt(ctx: TaskContext, history, template_index: int, user_knowledge: str | None) -> str:
    """The build's plain seqrec prompt for ``history`` (no scenario tags) in its ``prompt_format``: what
    ``seqrec_prompt`` gives at inference; the preference pairs use it too."""
    if ctx.cfg.prompt_format == "codes":
        return codes_prompt([ctx.code[i] for i in history], ctx.format.hf_tokenizer, _knowledge_prefix(user_knowledge))
    return ctx.format(seqrec_instruction(ctx.codes_text(history), template_index, user_knowledge))


def _window_prompt(ctx: TaskContext, user_id: str, history, target_scenario: str, history_scenarios, index: int,
                   position: int | None = None) -> str:
    """The formatted seqrec prompt of one window (``_window_instruction`` in the build's ``prompt_format``; the
    ``codes`` format keeps only the codes, and the user knowledge line when built with it)."""
    if ctx.cfg.prompt_format == "codes":
        return seqrec_window_prompt(ctx, history, index, ctx.knowledge(user_id, position))
    return ctx.format(_window_instruction(ctx, user_id, history, target_scenario, history_scenarios, index, position))


def build_seqrec(ctx: TaskContext) -> ListTask:
    n_templates = len(ctx.templates("seqrec_scenario" if ctx.cfg.scenario_prompts else "seqrec"))
    choice = ctx.rng("seqrec").integers(0, n_templates, size=len(ctx.windows))
    prompts = [_window_prompt(ctx, w.user_id, w.history, w.target_scenario, w.history_scenarios, int(t), w.position)
               for w, t in zip(ctx.windows, choice, strict=True)]
    return ListTask("seqrec", prompts, [ctx.code[w.target] for w in ctx.windows], [w.user_id for w in ctx.windows])


def full_sequence_spans(length: int, max_items: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each window of ``full_sequence_windows`` over a sequence of ``length`` items."""
    out, end = [], length
    while end >= 2:
        start = max(0, end - max_items)
        out.append((start, end))
        end = start + 1
    return out[::-1]


def full_sequence_windows(items: list[str], max_items: int) -> list[list[str]]:
    """Cut a training sequence into windows of at most ``max_items`` items from its end, overlapping by one.

    Every transition ``items[i-1] -> items[i]`` is supervised exactly once (as SASRec's training windows), and
    the last window carries the most recent items, as the evaluation histories do.
    """
    return [items[start:end] for start, end in full_sequence_spans(len(items), max_items)]


class SeqrecFullTask(Task):
    """The ``seqrec_full`` examples, each rendered when asked from the user's training sequence: the task holds
    three integers per example (user row, window start and end), never its text."""

    name = "seqrec_full"

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.codes_format = ctx.cfg.prompt_format == "codes"
        spans = ((row, start, end) for row, (_, items) in enumerate(ctx.train_sequences)
                 for start, end in full_sequence_spans(len(items), ctx.max_history + 1))
        table = np.fromiter(spans, dtype=np.dtype((np.int64, 3)))  # [examples, (user row, start, end)]
        self._rows, self._starts, self._ends = table.reshape(-1, 3).T

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def users(self) -> list[str]:
        """The user of each example (audits and tests; built when asked)."""
        return [self.ctx.train_sequences[row][0] for row in self._rows.tolist()]

    def example(self, i: int) -> dict[str, str]:
        ctx = self.ctx
        user_id, sequence = ctx.train_sequences[int(self._rows[i])]
        window = sequence[int(self._starts[i]):int(self._ends[i])]
        token = ctx.knowledge(user_id) if ctx.cfg.user_tokens else None  # text knowledge: refused at build
        if self.codes_format:
            prompt = codes_prompt([ctx.code[window[0]]], ctx.format.hf_tokenizer, _knowledge_prefix(token))
            completion = "".join(ctx.code[item] for item in window[1:])
        else:
            prompt = ctx.format(seqrec_instruction(ctx.code[window[0]], 0, token))
            completion = HISTORY_SEPARATOR.join(ctx.code[item] for item in window[1:])
        return {"prompt": prompt, "completion": completion, "task": self.name}


def build_seqrec_full(ctx: TaskContext) -> SeqrecFullTask:
    """Whole-sequence training: prompt = a window's first item, completion = every later item.

    With completion-only loss this is a causal loss on every item's codes in one forward pass (what SASRec
    does), ~``max_history`` times less compute per supervised item than one window per target. Every prefix of
    a row must be the seqrec prompt of the next item, so inference is unchanged: true for codes-only models
    (``codes_only`` tokenizer: text is erased) and for any tokenizer with ``prompt_format: codes`` (prompts are
    the codes alone, after the BOS token). Prompts with instruction text around the history are refused.
    """
    from alignrec.llm.hf_tokenizer import CODES_ONLY
    from recdata.errors import ConfigError

    codes_format = ctx.cfg.prompt_format == "codes"
    if not codes_format and getattr(ctx.format.hf_tokenizer, "name_or_path", "") != CODES_ONLY:
        raise ConfigError("task seqrec_full needs prompts that are the codes alone: set tasks.prompt_format: codes "
                          "(any LLM), or train a codes-only model (train.tokenizer_name_or_path: codes_only); with "
                          "instruction text around the history, train on seqrec windows instead")
    if codes_format and ctx.user_knowledge and not ctx.cfg.user_tokens:
        raise ConfigError("task seqrec_full rows carry no user knowledge, but these tasks put it in front of the "
                          "seqrec prompts (user_knowledge_dir): use seqrec, or build without user knowledge")
    return SeqrecFullTask(ctx)


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


def iter_validation_rows(ctx: TaskContext) -> Iterator[dict[str, Any]]:
    """The validation rows (``VALIDATION_FEATURES``), one at a time: ``seqrec`` on the valid targets (history =
    everything before the target, truncated)."""
    index = ctx.cfg.validation_template_index
    scen = ctx.cfg.scenario_prompts
    for example in ctx.split.iter_eval_examples("valid"):
        user_id, target = example["user_id"], example["target"]
        history = example["history"][-ctx.max_history:]
        h_scen = example["history_scenarios"][-ctx.max_history:] if scen else []
        prompt = _window_prompt(ctx, user_id, history, example["target_scenario"] if scen else "", h_scen, index)
        # user_id / history / target let the trainer's ranking validation rank the valid targets (never test ones)
        yield {"prompt": prompt, "completion": ctx.code[target], "task": "seqrec", "user_id": user_id,
               "history": list(history), "target": target}


def build_validation(ctx: TaskContext) -> datasets.Dataset:
    """``seqrec`` on the valid targets (history = everything before the target, truncated)."""
    return rows_to_dataset(iter_validation_rows(ctx), VALIDATION_FEATURES)
