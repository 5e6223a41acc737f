"""The multi-scenario backbone (SASRec encoder + per-scenario towers) and its LLM4MSR variant (+ meta layers).

Both extend the one SASRec through its extension points, not a fork:

- ``sequence_labels``: each training interaction's scenario, so every supervised position is trained through its
  *target's* scenario tower (``target_labels``); ``eval_context`` gives valid rows their target scenario. LLM4MSR
  adds ``label_stride`` to the label of each target its user-level knowledge may help predict (the targets after
  the ``user_history_items`` its prompt read, ``knowledge_target_labels``): the user meta layer runs only there
  in training, and always in evaluation and serving, as in ``KnowledgeSASRec``;
- ``final_states``: hidden state -> (LLM4MSR: scenario meta layer -> user meta layer ->) scenario tower;
- ``context_for`` (LLM4MSR): user ids -> rows of the user-knowledge table.

Ranking *within* a scenario (``as_recommend_fn(..., scenario_items=)`` passes ``scenarios=``) reads that scenario's
tower. Ranking the *whole* catalogue without a scenario scores every item through its own scenario's tower
(``item_scenario``: an item's most frequent label), so one list mixes both scenarios on a common scale.

LLM4MSR (Wang et al., CIKM 2024): a frozen LLM describes every scenario (and how it relates to the others) and
summarises each user's interests across scenarios; the encoded answers feed *meta networks* that generate the
weights of a scenario-specific and a user-specific layer (``MetaLayerGenerator``). The user-level meta network also
reads the scenario's vector (hierarchical: a user's layer differs per scenario).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignrec.recommenders.knowledge_sasrec import knowledge_target_labels
from alignrec.recommenders.meta_layers import MetaLayerGenerator, ScenarioTowers
from alignrec.recommenders.sasrec import SASRec
from alignrec.recommenders.sasrec_config import SASRecConfig
from recdata.io import atomic_write_json
from recdata.split import SplitDataset

__all__ = ["LLM4MSRSASRec", "ScenarioSASRec", "knowledge_table"]

SCENARIO_FILE = "scenario_model.json"


def knowledge_table(ids: Sequence[str], vectors: np.ndarray, wanted: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[len(wanted) + 1, K]`` rows in ``wanted`` order (row 0 = none) and a has-knowledge mask ``[len + 1]``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"knowledge vectors must be [n, K], got shape {vectors.shape}")
    row = {str(i): r for r, i in enumerate(ids)}
    table = torch.zeros(len(wanted) + 1, vectors.shape[1])
    has = torch.zeros(len(wanted) + 1, dtype=torch.bool)
    for position, key in enumerate(wanted, start=1):
        if key in row:
            table[position] = torch.from_numpy(vectors[row[key]])
            has[position] = True
    return table, has


class ScenarioSASRec(SASRec):
    """Shared SASRec encoder + one STAR-style tower per scenario (``scenario_names``; index 0 = unknown).

    ``item_scenario``: ``{item_id: scenario}`` (``split.item_scenario()``), for whole-catalogue ranking.
    """

    def __init__(self, item_ids: Sequence[str], cfg: SASRecConfig, scenario_names: Sequence[str],
                 item_scenario: Mapping[str, str]) -> None:
        super().__init__(item_ids, cfg)
        if not scenario_names:
            raise ValueError("a multi-scenario backbone needs at least one scenario; prepare the data with "
                             "scenario_column or scenario_item_field")
        self.scenario_names = [str(s) for s in scenario_names]
        self.scenario_row = {s: r for r, s in enumerate(self.scenario_names, start=1)}
        self.item_scenario = {str(i): str(s) for i, s in item_scenario.items() if str(i) in self.index}
        self.register_buffer("item_scenario_index", torch.tensor(  # [items] scenario row of each item (0 = none)
            [self.scenario_row.get(self.item_scenario.get(i, ""), 0) for i in self.item_ids], dtype=torch.long))
        self.towers = ScenarioTowers(cfg.sasrec_dim, len(self.scenario_names))

    @classmethod
    def for_split(cls, split: SplitDataset, cfg: SASRecConfig, **kwargs: Any) -> ScenarioSASRec:
        """Over the split's catalogue and scenarios (``split.item_scenario()`` reads catalogue labels only)."""
        return cls(split.dataset.item_ids(), cfg, split.scenario_names(), split.item_scenario(), **kwargs)

    # ---- scenario of each row --------------------------------------------------------------------------------
    @property
    def label_stride(self) -> int:
        """A training label is ``scenario row + label_stride * flag`` (flag: LLM4MSR's user meta layer allowed)."""
        return len(self.scenario_names) + 1

    def target_label(self, rows: torch.Tensor | None, cols: torch.Tensor | None,
                     target_labels: torch.Tensor | None) -> torch.Tensor | None:
        """``[rows]`` the training label of each supervised position (padding -> 0); None outside training."""
        if target_labels is None or rows is None or cols is None:
            return None
        device = self.item_emb.weight.device
        return target_labels.to(device)[rows.to(device), cols.to(device)].clamp(min=0)

    def scenario_index(self, names: Sequence[str]) -> torch.Tensor:
        """``[len(names)]`` tower rows (0 for a name this model has no tower for)."""
        return torch.tensor([self.scenario_row.get(str(s), 0) for s in names], dtype=torch.long,
                            device=self.item_emb.weight.device)

    def _row_scenarios(self, rows: torch.Tensor | None, cols: torch.Tensor | None,
                       target_labels: torch.Tensor | None, scenarios: Sequence[str] | None, n: int) -> torch.Tensor:
        device = self.item_emb.weight.device
        target = self.target_label(rows, cols, target_labels)
        if target is not None:  # training: the target's scenario
            return target % self.label_stride
        if scenarios is not None:
            index = self.scenario_index(scenarios)
            return index[rows.to(device)] if rows is not None else index
        return torch.zeros(n, dtype=torch.long, device=device)

    # ---- extension points ------------------------------------------------------------------------------------
    def sequence_labels(self, split: SplitDataset) -> list[list[int]]:
        return [[self.scenario_row.get(s, 0) for s in labels] for _, _, labels in split.train_scenario_sequences()]

    def eval_context(self, examples) -> dict:
        context = self.context_for(list(examples["user_id"]))
        if "target_scenario" in examples.column_names:
            context["scenarios"] = list(examples["target_scenario"])
        return context

    def final_states(self, hidden: torch.Tensor, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None,
                     target_labels: torch.Tensor | None = None, scenarios: Sequence[str] | None = None,
                     **context) -> torch.Tensor:
        scenario = self._row_scenarios(rows, cols, target_labels, scenarios, hidden.shape[0])  # [rows]
        states = self.scenario_states(hidden, scenario, rows=rows, target=self.target_label(rows, cols, target_labels),
                                      **context)
        return self.towers(states, scenario)

    def scenario_states(self, hidden: torch.Tensor, scenario: torch.Tensor, rows: torch.Tensor | None = None,
                        target: torch.Tensor | None = None, **context) -> torch.Tensor:
        """Hook before the towers (the LLM4MSR meta layers); ``target``: ``[rows]`` training labels (None outside
        training). The plain backbone passes states through."""
        return hidden

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[str]], batch_size: int = 256, **context) -> torch.Tensor:
        """Within ``scenarios`` when given (one per row); else each item through its own scenario's tower."""
        if context.get("scenarios") is not None:
            return super().score(histories, batch_size, **context)
        out = torch.empty(len(histories), len(self.item_ids))
        index = self.item_scenario_index.cpu()
        for row in index.unique().tolist():
            name = self.scenario_names[row - 1] if row else ""  # "" has no tower: the shared part only
            columns = index == row
            out[:, columns] = super().score(histories, batch_size, scenarios=[name] * len(histories),
                                            **context)[:, columns]
        return out

    # ---- persistence -----------------------------------------------------------------------------------------
    def init_args(self) -> dict[str, Any]:
        """JSON-able constructor arguments besides ``item_ids`` / ``cfg`` (``from_pretrained`` rebuilds from them)."""
        return {"scenario_names": self.scenario_names, "item_scenario": self.item_scenario}

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """SASRec's files (every weight and buffer) + ``scenario_model.json`` (class and constructor arguments)."""
        super().save_pretrained(path)
        atomic_write_json(Path(path) / SCENARIO_FILE, {"class": type(self).__name__, **self.init_args()})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> ScenarioSASRec:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / SCENARIO_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved multi-scenario backbone (no {SCENARIO_FILE}); train one "
                                    "with `alignrec scenarios train`")
        meta = json.loads((path / "sasrec_config.json").read_text())
        args = json.loads((path / SCENARIO_FILE).read_text())
        if args.pop("class") != cls.__name__:
            raise ValueError(f"{path} holds a saved model of another class; load it with that class")
        fields = {f.name for f in dataclasses.fields(SASRecConfig)}
        cfg = SASRecConfig(**{k: v for k, v in meta["config"].items() if k in fields})
        model = cls._rebuild(meta["item_ids"], cfg, args)
        model.load_state_dict(load_file(str(path / "model.safetensors")))  # restores knowledge tables too
        return model.to(device).eval()

    @classmethod
    def _rebuild(cls, item_ids: list[str], cfg: SASRecConfig, args: dict[str, Any]) -> ScenarioSASRec:
        return cls(item_ids, cfg, **args)


class LLM4MSRSASRec(ScenarioSASRec):
    """The backbone + LLM4MSR's hierarchical meta layers, generated from encoded LLM answers.

    ``scenario_knowledge``: ``(scenario names, vectors [S, Ks])``; ``user_knowledge``: ``(user ids, vectors [U,
    Ku])`` (``alignrec knowledge encode`` of ``alignrec scenarios extract``). A scenario / user without a vector
    skips its meta layer (the backbone alone). ``user_history_items``: ``{user: n}``, how many leading training
    items each user's prompt read (stored by ``encode``); in training the user meta layer joins only the targets
    from there on (a user missing there: never in training). Evaluation and serving always use it.
    """

    def __init__(self, item_ids: Sequence[str], cfg: SASRecConfig, scenario_names: Sequence[str],
                 item_scenario: Mapping[str, str], scenario_knowledge: tuple[Sequence[str], np.ndarray],
                 user_knowledge: tuple[Sequence[str], np.ndarray], *, user_history_items: Mapping[str, int],
                 meta_rank: int = 4, meta_hidden: int = 64) -> None:
        super().__init__(item_ids, cfg, scenario_names, item_scenario)
        self.user_history_items = {str(u): int(n) for u, n in user_history_items.items()}
        scen_table, scen_has = knowledge_table(scenario_knowledge[0], scenario_knowledge[1], self.scenario_names)
        self.user_ids = [str(u) for u in user_knowledge[0]]
        self.user_row = {u: r for r, u in enumerate(self.user_ids, start=1)}
        user_table, user_has = knowledge_table(self.user_ids, user_knowledge[1], self.user_ids)
        self.register_buffer("scenario_knowledge", scen_table)  # [S + 1, Ks]
        self.register_buffer("scenario_has", scen_has)  # [S + 1]
        self.register_buffer("user_knowledge", user_table)  # [U + 1, Ku]
        self.register_buffer("user_has", user_has)  # [U + 1]
        self.meta_args = {"meta_rank": meta_rank, "meta_hidden": meta_hidden}
        ks, ku = scen_table.shape[1], user_table.shape[1]
        self.scenario_meta = MetaLayerGenerator(ks, cfg.sasrec_dim, meta_rank, meta_hidden)
        self.user_meta = MetaLayerGenerator(ku + ks, cfg.sasrec_dim, meta_rank, meta_hidden)  # user | scenario

    def context_for(self, user_ids: Sequence[str]) -> dict:
        """``user_index``: each user's knowledge row (0 = no user knowledge: no user meta layer)."""
        return {"user_index": torch.tensor([self.user_row.get(str(u), 0) for u in user_ids], dtype=torch.long)}

    def sequence_labels(self, split: SplitDataset) -> list[list[int]]:
        """The scenario row of each training target, + ``label_stride`` where the user meta layer may join."""
        allowed = knowledge_target_labels(split, self.user_history_items)
        return [[s + self.label_stride * a for s, a in zip(scen, flags, strict=True)]
                for scen, flags in zip(super().sequence_labels(split), allowed, strict=True)]

    def scenario_states(self, hidden: torch.Tensor, scenario: torch.Tensor, rows: torch.Tensor | None = None,
                        target: torch.Tensor | None = None, user_index: torch.Tensor | None = None,
                        **context) -> torch.Tensor:
        scen_vec = self.scenario_knowledge[scenario]  # [rows, Ks]
        hidden = self.scenario_meta(hidden, scen_vec, active=self.scenario_has[scenario])  # scenario-specific layer
        if user_index is None:
            return hidden
        users = user_index.to(hidden.device)
        if rows is not None:
            users = users[rows.to(hidden.device)]
        user_vec = torch.cat([self.user_knowledge[users], scen_vec], dim=-1)  # [rows, Ku + Ks]
        active = self.user_has[users]  # [rows]
        if target is not None:  # training: only targets after what the user's prompt read
            active = active & (target >= self.label_stride)
        return self.user_meta(hidden, user_vec, active=active)  # user-specific layer

    def init_args(self) -> dict[str, Any]:
        return {**super().init_args(), **self.meta_args, "user_ids": self.user_ids,
                "scenario_dim": int(self.scenario_knowledge.shape[1]), "user_dim": int(self.user_knowledge.shape[1])}

    @classmethod
    def _rebuild(cls, item_ids: list[str], cfg: SASRecConfig, args: dict[str, Any]) -> LLM4MSRSASRec:
        users, ks, ku = args.pop("user_ids"), args.pop("scenario_dim"), args.pop("user_dim")
        empty_scen = (args["scenario_names"], np.zeros((len(args["scenario_names"]), ks), np.float32))
        return cls(item_ids, cfg, scenario_knowledge=empty_scen, user_knowledge=(users, np.zeros((len(users), ku),
                   np.float32)), user_history_items={}, **args)  # serving: the user layer joins every state
