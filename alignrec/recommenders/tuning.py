"""Test-blind hyper-parameter search for the dense recommenders: a coordinate search, then seeded random points.

A fair bar gets at least the tuning budget of the recipe it is compared with. ``coordinate_search`` spends a
fixed number of evaluations of a caller's ``evaluate(params) -> {"score": valid metric, ...}``: one axis at a
time, it tries every value of that axis with the others fixed at the best point so far and moves there; when a
whole pass over the axes improves nothing, the rest of the budget goes to seeded random points of the space (a
coordinate search alone stalls where axes interact, e.g. width with dropout). Every trial is appended to a
JSON-lines file as it finishes, so a killed search resumes and never trains a point twice. The caller's
``evaluate`` must read validation targets only: the search never sees test.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["SASREC_SPACE", "check_resumable", "coordinate_search", "point_key", "read_trials"]

# The SASRec bar's axes, in search order (width first: it is the main lever in our own ablations).
SASREC_SPACE: dict[str, list[Any]] = {
    "sasrec_dim": [64, 128, 256, 384],
    "sasrec_dropout": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    "sasrec_lr": [5e-4, 1e-3, 2e-3, 4e-3, 8e-3],
    "sasrec_layers": [1, 2, 3],
    "sasrec_weight_decay": [0.0, 0.01, 0.1],
}


def check_resumable(path: Path, identity: Mapping[str, Any], under: str | None = None) -> None:
    """Trials in a folder are reused only by the same search: ``identity`` (JSON values) against what ``path``
    recorded (its ``under`` entry when given); a difference is one line naming the keys that differ."""
    from recdata.errors import UserError

    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    before = before.get(under, {}) if under else before
    changed = sorted(k for k, v in identity.items() if json.loads(json.dumps(v)) != before.get(k))
    if changed:
        raise UserError(f"{path.parent} holds trials of another search ({', '.join(changed)} differ); use a new "
                        "--out_dir, or delete its trials files and tune_config.json to start over")


def point_key(params: Mapping[str, Any]) -> str:
    """The identity of a point: its parameters as sorted JSON (floats as written, so 1e-3 == 0.001)."""
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)


def read_trials(path: str | Path) -> list[dict[str, Any]]:
    """Finished trials of a trials file (a torn last line from a kill is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    trials = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            trials.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: ignoring a torn line (the search was killed while writing it)", path)
    return trials


def coordinate_search(space: Mapping[str, Sequence[Any]], start: Mapping[str, Any],
                      evaluate: Callable[[dict[str, Any]], Mapping[str, Any]], budget: int,
                      trials_file: str | Path, seed: int = 0) -> dict[str, Any]:
    """Spend ``budget`` evaluations (the start point included); return ``{"best": trial, "trials": [...]}``.

    ``start`` holds a value for every axis (it need not be on the grid). Trials already in ``trials_file`` count
    against the budget and are not re-run. Ties keep the earlier point.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    missing = sorted(set(space) - set(start))
    if missing:
        raise ValueError(f"start point lacks axes {missing}")
    trials_file = Path(trials_file)
    trials_file.parent.mkdir(parents=True, exist_ok=True)
    done = {t["key"]: t for t in read_trials(trials_file)}
    order = list(done.values())

    def run(params: dict[str, Any]) -> dict[str, Any] | None:
        key = point_key(params)
        if key in done:
            return done[key]
        if len(done) >= budget:
            return None
        logger.info("trial %d/%d: %s", len(done) + 1, budget, params)
        trial = {"key": key, "params": dict(params), "index": len(done), **dict(evaluate(dict(params)))}
        if "score" not in trial:
            raise ValueError("evaluate(params) must return a 'score' (the valid metric)")
        with trials_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(trial) + "\n")
        done[key] = trial
        order.append(trial)
        return trial

    best = run(dict(start))
    if best is None:  # budget already spent by an earlier run of this file with other points
        best = max(order, key=lambda t: (t["score"], -t["index"]))
    improved = True
    while improved and len(done) < budget:
        improved = False
        for axis, values in space.items():
            for value in values:
                trial = run({**best["params"], axis: value})
                if trial is not None and trial["score"] > best["score"]:
                    best, improved = trial, True
    rng = random.Random(seed)
    tries = 0
    while len(done) < budget and tries < 100 * budget:  # random points once the coordinate search has converged
        tries += 1
        trial = run({axis: rng.choice(list(values)) for axis, values in space.items()} | {
            k: v for k, v in start.items() if k not in space})
        if trial is not None and trial["score"] > best["score"]:
            best = trial
    best = max(order, key=lambda t: (t["score"], -t["index"]))
    return {"best": best, "trials": sorted(order, key=lambda t: t["index"])}
