"""The ``Task`` interface and the deterministic ``TaskMixture`` that samples tasks by explicit weights."""

from __future__ import annotations

import logging
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import datasets
import numpy as np

logger = logging.getLogger(__name__)

COLUMNS = ("prompt", "completion", "task")
FEATURES = datasets.Features({c: datasets.Value("string") for c in COLUMNS})


class Task(ABC):
    """A finite, indexable list of prompt/completion examples (nanochat style)."""

    name: str = "task"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def example(self, i: int) -> dict[str, str]:
        """``{"prompt": ..., "completion": ..., "task": self.name}``; deterministic in ``i``."""


class ListTask(Task):
    """A task whose examples were built up front (prompts already formatted).

    ``users`` (user-level tasks only) names the user each example comes from; it is not an output column
    but lets tests and audits check per-user leakage.
    """

    def __init__(self, name: str, prompts: list[str], completions: list[str], users: list[str] | None = None) -> None:
        if len(prompts) != len(completions) or (users is not None and len(users) != len(prompts)):
            raise ValueError(f"{name}: prompts, completions and users differ in length")
        self.name = name
        self.prompts = prompts
        self.completions = completions
        self.users = users

    def __len__(self) -> int:
        return len(self.prompts)

    def example(self, i: int) -> dict[str, str]:
        return {"prompt": self.prompts[i], "completion": self.completions[i], "task": self.name}


def task_seed(seed: int, name: str) -> list[int]:
    """A per-task seed sequence, so adding a task never changes another task's random draws."""
    return [seed, zlib.crc32(name.encode("utf-8"))]


def allocate(sizes: dict[str, int], weights: dict[str, float], total: int) -> dict[str, int]:
    """Examples per task.

    ``total == 0``: a weight multiplies the task's own size (``round(w * len)``), so weight 1 = one pass.
    ``total > 0``: weights are normalised over non-empty tasks and split ``total`` by largest remainder, so
    the counts sum to ``total`` exactly.
    """
    live = {name: w for name, w in weights.items() if w > 0 and sizes.get(name, 0) > 0}
    for name, w in weights.items():
        if w > 0 and sizes.get(name, 0) == 0:
            logger.warning("task %s has weight %s but no examples on this dataset; it is left out", name, w)
    if not total:
        return {name: int(round(w * sizes[name])) for name, w in live.items()}
    if not live:
        return {}
    norm = sum(live.values())
    exact = {name: total * w / norm for name, w in live.items()}
    counts = {name: int(np.floor(v)) for name, v in exact.items()}
    order = sorted(live, key=lambda n: (-(exact[n] - counts[n]), list(live).index(n)))
    for name in order[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


class TaskMixture(Task):
    """Deterministic weighted mixture: per task, whole passes plus a random subset, then one global shuffle.

    A task drawn ``n`` times with ``len`` examples contributes ``n // len`` full copies and ``n % len``
    distinct random examples (stratified sampling with replacement), so no example repeats more than needed.
    """

    name = "mixture"

    def __init__(self, tasks: list[Task], weights: dict[str, float], seed: int = 0, total: int = 0) -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        missing = sorted(set(weights) - set(names))
        if missing:
            raise ValueError(f"weights name task(s) {missing} that were not built; built tasks: {names}")
        self.tasks = {t.name: t for t in tasks}
        self.weights = dict(weights)
        self.seed = seed
        self.counts = allocate({t.name: len(t) for t in tasks}, self.weights, total)
        plan_task, plan_index = [], []
        for task_id, name in enumerate(names):
            n = self.counts.get(name, 0)
            if not n:
                continue
            size = len(self.tasks[name])
            rng = np.random.default_rng(task_seed(seed, name))
            idx = np.concatenate([np.tile(np.arange(size), n // size), rng.choice(size, n % size, replace=False)])
            plan_task.append(np.full(n, task_id, dtype=np.int64))
            plan_index.append(idx.astype(np.int64))
        self._names = names
        if plan_task:
            order = np.random.default_rng([seed, 0x5EED]).permutation(sum(len(a) for a in plan_task))
            self._task_ids = np.concatenate(plan_task)[order]
            self._indices = np.concatenate(plan_index)[order]
        else:
            self._task_ids = self._indices = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._task_ids)

    def example(self, i: int) -> dict[str, str]:
        return self.tasks[self._names[self._task_ids[i]]].example(int(self._indices[i]))

    def iter_rows(self) -> Iterator[dict[str, str]]:
        """The mixture's examples in order, one at a time (``recdata.dataset_writer`` streams them to disk)."""
        return (self.example(i) for i in range(len(self)))

    def to_dataset(self) -> datasets.Dataset:
        return rows_to_dataset(self.iter_rows(), FEATURES)


def rows_to_dataset(rows: Iterable[Mapping[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """An in-memory Dataset of ``rows`` (dicts with every column of ``features``): the rows a streamed build
    writes with ``recdata.dataset_writer.save_dataset_rows``, for callers that want them in memory."""
    columns: dict[str, list] = {c: [] for c in features}
    for row in rows:
        for c in features:
            columns[c].append(row[c])
    return datasets.Dataset.from_dict(columns, features=features)
