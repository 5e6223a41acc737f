"""What every task builder needs, computed once: windows over the training part, code strings, item text."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recdata import SplitDataset
from recdata.errors import UserError
from sft_tasks.base import task_seed
from sft_tasks.config import TaskConfig
from sft_tasks.formatting import PromptFormatter
from sft_tasks.templates import HISTORY_SEPARATOR, SCENARIO_TAG, TEMPLATES
from sft_tasks.user_tokens import assign_user_tokens


@dataclass(frozen=True)
class Window:
    """One sliding-window training example: the history before ``target`` (truncated) and the target.

    With scenarios, ``history_scenarios`` / ``target_scenario`` are the labels of those interactions;
    ``position`` is the target's index in the user's training part.
    """

    user_id: str
    history: tuple[str, ...]
    target: str
    history_scenarios: tuple[str, ...] = ()
    target_scenario: str = ""
    position: int = -1


USER_KNOWLEDGE_FILE = "user_knowledge.json"  # the prompt texts a build used; the trained model keeps a copy


def load_user_knowledge(knowledge_dir: str) -> dict[str, str]:
    """``{user_id: text}`` from an `alignrec knowledge extract` folder (public API of the knowledge stage)."""
    from alignrec.knowledge import read_knowledge

    return read_knowledge(knowledge_dir, "user")


def read_build_user_knowledge(dataset_dir: str | Path) -> dict[str, str] | None:
    """The ``user_knowledge.json`` a tasks build wrote beside its DatasetDict (None when built without)."""
    path = Path(dataset_dir) / USER_KNOWLEDGE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def user_knowledge_texts(knowledge_dir: str, words: int) -> dict[str, str]:
    """``{user_id: text cut to words}``: exactly what the seqrec prompts put in front (empty texts dropped)."""
    return {user: clip_words(text, words) for user, text in load_user_knowledge(knowledge_dir).items() if text}


def clip_words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if limit and len(words) > limit else "")


class Windows(Sequence[Window]):
    """The sliding windows of every user's training part, made on demand: target = items[i] with history
    items[:i][-max_history:] for every i >= 1, users in order. Holds one offset per user, never the windows
    (there are ~interactions of them, each with its history: the largest thing a build would hold).

    ``scenarios[u]`` (aligned with user ``u``'s training items) labels the windows.
    """

    def __init__(self, train_sequences: Sequence[tuple[str, Sequence[str]]], max_history: int,
                 scenarios: Sequence[Sequence[str]] | None = None) -> None:
        self.train_sequences = train_sequences
        self.max_history = max_history
        self.scenarios = scenarios
        per_user = np.fromiter((max(len(items) - 1, 0) for _, items in train_sequences), dtype=np.int64,
                               count=len(train_sequences))
        self._starts = np.concatenate([[0], np.cumsum(per_user)])  # [users + 1]: user u's windows start here

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _window(self, u: int, i: int) -> Window:
        user_id, items = self.train_sequences[u]
        start = max(0, i - self.max_history)
        if self.scenarios is None:
            return Window(user_id, tuple(items[start:i]), items[i], position=i)
        labels = self.scenarios[u]
        return Window(user_id, tuple(items[start:i]), items[i], tuple(labels[start:i]), labels[i], i)

    def user_windows(self, u: int) -> Iterator[Window]:
        """User ``u``'s windows (``train_sequences[u]``), in order."""
        for i in range(1, len(self.train_sequences[u][1])):
            yield self._window(u, i)

    def __iter__(self) -> Iterator[Window]:
        for u in range(len(self.train_sequences)):
            yield from self.user_windows(u)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"window index {index} out of range for {n} windows")
        index = int(index) % n
        u = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._window(u, index - int(self._starts[u]) + 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


def sliding_windows(train_sequences: Sequence[tuple[str, Sequence[str]]], max_history: int,
                    scenarios: Sequence[Sequence[str]] | None = None) -> Windows:
    """target = items[i] with history items[:i][-max_history:] for every i >= 1 of each training part, made on
    demand (``Windows``). ``scenarios[u]`` (aligned with user ``u``'s training items) labels the windows."""
    return Windows(train_sequences, max_history, scenarios)


class UserTrainItems(Mapping[str, frozenset]):
    """``{user_id: frozenset of the user's training items}``, each set made when asked (the last one kept: the
    builders ask window after window of one user). A set per user held at once costs ~1 kB a user."""

    def __init__(self, train_sequences: Sequence[tuple[str, Sequence[str]]]) -> None:
        self.train_sequences = train_sequences
        self._row = {user_id: row for row, (user_id, _) in enumerate(train_sequences)}
        self._last: tuple[str, frozenset] | None = None

    def __getitem__(self, user_id: str) -> frozenset:
        if self._last is None or self._last[0] != user_id:
            self._last = (user_id, frozenset(self.train_sequences[self._row[user_id]][1]))
        return self._last[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)


class TaskContext:
    """Shared, precomputed inputs of the task builders for one (split, item tokenizer, HF tokenizer)."""

    def __init__(self, cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any, hf_tokenizer: Any) -> None:
        self.cfg = cfg
        self.split = split
        self.item_tokenizer = item_tokenizer
        self.format = PromptFormatter(hf_tokenizer, cfg.prompt_format)
        self.max_history = cfg.max_history or split.max_history
        inert = self.format.inert  # data text never becomes a special or code token (alignrec.llm.inert_text)
        self.items = {item_id: {k: inert(v) if k != "item_id" and isinstance(v, str) else v for k, v in row.items()}
                      for item_id, row in split.dataset.item_table().items()}
        coded = set(item_tokenizer.item_ids)
        used = {i for seq in split.dataset.sequences["item_ids"] for i in seq}
        missing = sorted(used - coded)
        if missing:
            raise UserError(
                f"{len(missing)} item(s) of dataset {split.dataset.name!r} have no code in the ItemTokenizer, "
                f"e.g. {missing[:5]}; rebuild the item tokenizer (`alignrec tokenize`) on this dataset"
            )
        # Items the tasks may show: in the catalogue and coded.
        self.item_ids = [i for i in item_tokenizer.item_ids if i in self.items]
        self.code = {i: item_tokenizer.item_to_string(i) for i in self.item_ids}
        # split.train_sequences() with one str object per item id (Arrow gives a new one per interaction: ~50 bytes
        # each, the bulk of what a build holds per user)
        item_id = {i: i for i in self.items}
        self.train_sequences = [(user_id, [item_id.get(i, i) for i in items])
                                for user_id, items in split.iter_train_sequences()]
        self.user_train_items = UserTrainItems(self.train_sequences)
        labels = None
        if cfg.scenario_prompts:
            if not split.has_scenarios:
                raise UserError(f"scenario_prompts is set but dataset {split.dataset.name!r} has no scenario labels; "
                                 "prepare it with scenario_column or scenario_item_field, or unset scenario_prompts")
            labels = [scens for _, _, scens in split.train_scenario_sequences()]
        self.windows = sliding_windows(self.train_sequences, self.max_history, labels)
        self.popularity = split.train_popularity()  # {item: training interactions}, the one definition
        if cfg.user_tokens:  # {user: "<user_i>"}: a token, not text, so it does not go through ``inert``
            self.user_knowledge = assign_user_tokens((user for user, _ in self.train_sequences), cfg.user_tokens)
        else:
            self.user_knowledge = ({user: inert(text) for user, text in
                                    user_knowledge_texts(cfg.user_knowledge_dir, cfg.user_knowledge_words).items()}
                                   if cfg.user_knowledge_dir else {})
        # {user: n}: the knowledge read the first n training items (public API of the knowledge stage)
        from alignrec.knowledge import read_user_history_items

        self.knowledge_history_items = read_user_history_items(cfg.user_knowledge_dir) if cfg.user_knowledge_dir else {}

    def knowledge(self, user_id: str, target_position: int | None = None) -> str | None:
        """The user's (training-part) knowledge text cut to ``user_knowledge_words``, or their user token
        (``user_tokens``); None when off or unknown.

        ``target_position`` (a training window's target index): None too when the knowledge already read that
        target, so no training example can copy its answer from the knowledge. Evaluation rows pass none.
        """
        text = self.user_knowledge.get(user_id)
        if text is None or self.cfg.user_tokens:  # a user token holds no item, so no target to copy
            return text
        if target_position is not None and target_position < self.knowledge_history_items[user_id]:
            return None
        return text

    def templates(self, task: str) -> list[str]:
        options = TEMPLATES[task]
        return options[: self.cfg.max_templates] if self.cfg.max_templates else options

    def rng(self, task: str) -> np.random.Generator:
        return np.random.default_rng(task_seed(self.cfg.seed, task))

    def codes_text(self, item_ids: tuple[str, ...] | list[str]) -> str:
        return HISTORY_SEPARATOR.join(self.code[i] for i in item_ids)

    def tagged_codes_text(self, item_ids: tuple[str, ...] | list[str], scenarios: tuple[str, ...] | list[str]) -> str:
        """History codes, each tagged with its interaction's scenario (``scenario_prompts``)."""
        return scenario_history_text([self.code[i] for i in item_ids], [self.format.inert(s) for s in scenarios])

    def titles_text(self, item_ids: tuple[str, ...] | list[str]) -> str:
        return HISTORY_SEPARATOR.join(f'"{self.short_title(i)}"' for i in item_ids)

    def short_title(self, item_id: str) -> str:
        words = self.items[item_id]["title"].split()
        limit = self.cfg.max_title_words
        return " ".join(words[:limit]) + " ..." if limit and len(words) > limit else " ".join(words)


def scenario_history_text(codes: list[str], scenarios: tuple[str, ...] | list[str]) -> str:
    """``"<a_1><b_2> (food), <a_3><b_4> (kitchen)"``: one definition for training and inference prompts."""
    if len(codes) != len(scenarios):
        raise ValueError(f"{len(codes)} history items but {len(scenarios)} scenario labels; give one per item")
    return HISTORY_SEPARATOR.join(SCENARIO_TAG.format(item=c, scenario=s) for c, s in zip(codes, scenarios, strict=True))
