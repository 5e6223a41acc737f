"""``compare_runs.py --slice BUCKET``: a comparison restricted to the users whose target is in one bucket of training
popularity (``head`` / ``torso`` / ``tail`` / ``unseen``: the evaluation's ``target_popularity`` slice).

``per_user.parquet`` has no bucket column, so each example's bucket is assigned again from the split the evaluation
read (``metrics.json``'s ``EvaluateConfig.split_dir`` and ``part``, as compare_runs' fingerprint check finds it)
with the evaluation's own function, ``recdata.evaluation.popularity_buckets`` over ``split.train_popularity()`` and
the catalogue, exactly as ``evaluate_recommender`` calls it. Each row's restricted users and means are then checked
against that row's ``slices.target_popularity[BUCKET]`` in ``metrics.json`` (its ``n`` and every compared metric),
so a bucket assignment that differs from the evaluation's is refused, never compared.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import ConfigError

logger = logging.getLogger("compare_runs")
SLICE_FAMILY = "target_popularity"
BUCKETS = ("head", "torso", "tail", "unseen")  # the buckets evaluate_recommender reports in SLICE_FAMILY


def check_bucket(bucket: str | None) -> None:
    """Refuse a bucket the evaluation never reports (before anything is read); None is no slice."""
    if bucket is not None and bucket not in BUCKETS:
        raise ConfigError(f"--slice {bucket!r} is not a {SLICE_FAMILY} bucket; the buckets are {list(BUCKETS)}")


def target_buckets(split_dir: str | Path, part: str) -> dict[str, str]:
    """``{user_id: bucket}`` of ``part``'s examples: the target's bucket as ``evaluate_recommender`` assigns it
    (``popularity_buckets`` of the training popularity over the catalogue; a target outside it is ``unseen``)."""
    from recdata import SplitDataset
    from recdata.evaluation import popularity_buckets

    split = SplitDataset.load(split_dir)
    bucket_of = popularity_buckets(split.train_popularity(), split.dataset.item_ids())
    out: dict[str, str] = {}
    for example in split.iter_eval_examples(part):
        user = str(example["user_id"])
        if user in out:
            raise ConfigError(f"{split_dir}: user {user} has two {part} examples; --slice pairs by user id")
        out[user] = bucket_of.get(example["target"], "unseen")
    return out


def _slice_record(label: str, row: dict[str, Any], bucket: str) -> dict[str, Any]:
    """The row's ``slices.target_popularity[bucket]`` from its ``metrics.json`` (refused when absent)."""
    family = (row.get("slices") or {}).get(SLICE_FAMILY) or {}
    if bucket not in family:
        raise ConfigError(f"{label} ({row['folder']}): metrics.json has no {SLICE_FAMILY} slice {bucket!r} (it has "
                          f"{sorted(family)}); re-run its evaluation with this version")
    return family[bucket]


def _restrict_row(label: str, row: dict[str, Any], bucket: str, buckets: dict[str, str], metrics: list[str],
                  tolerance: float) -> list[str]:
    """The row's users in ``bucket`` (in per-user order), after checking them against its metrics.json slice."""
    values = row["values"]
    users = list(next(iter(values.values())))
    unknown = [u for u in users if u not in buckets]
    if unknown:
        raise ConfigError(f"{label} ({row['folder']}) scores {len(unknown)} users (e.g. {unknown[0]}) that the "
                          f"{row['part']} part of {row['split_dir']} does not have: the split changed since its "
                          "evaluation")
    keep = [u for u in users if buckets[u] == bucket]
    stored = _slice_record(label, row, bucket)
    if len(keep) != stored.get("n"):
        raise ConfigError(f"{label} ({row['folder']}): {len(keep)} users have a {bucket} target in "
                          f"{row['split_dir']} but metrics.json's {SLICE_FAMILY} slice has {stored.get('n')}; the "
                          "bucket assignment is not the evaluation's, re-run the evaluation")
    if not keep:
        raise ConfigError(f"{label} ({row['folder']}): no user has a {bucket} target; nothing to compare")
    for m in metrics:
        mean = float(np.mean([values[m][u] for u in keep]))
        if stored.get(m) is None or not math.isclose(mean, stored[m], rel_tol=tolerance, abs_tol=tolerance):
            raise ConfigError(f"{label} ({row['folder']}): the per-user {m} mean over the {len(keep)} {bucket} "
                              f"users is {mean:.6f}, metrics.json's {bucket} {m} is {stored.get(m)}; the bucket "
                              "assignment or the per-user file is not the evaluation's, re-run the evaluation")
    return keep


def restrict_to_slice(per_seed: list[dict[str, dict[str, Any]]], ours: str, bucket: str, metrics: list[str],
                      tolerance: float) -> int:
    """Restrict every row's ``values`` (of every seed, in place) to the users whose target is in ``bucket``, each
    row checked against its own split and metrics.json; refuse unless every row keeps ours's (seed 1) users.
    Returns the slice's number of users."""
    cache: dict[tuple[str, str], dict[str, str]] = {}
    kept: dict[str, list[str]] = {}
    for i, rows in enumerate(per_seed):
        for ref, row in rows.items():
            label = ref if len(per_seed) == 1 else f"{ref} (seed {i + 1})"
            split_dir, part = row["split_dir"], row["part"]
            if not split_dir or not part or not Path(split_dir).is_dir():
                raise ConfigError(f"{label} ({row['folder']}): metrics.json records split folder {split_dir!r} and "
                                  f"part {part!r}; --slice needs the split the evaluation read")
            key = (str(Path(split_dir).resolve()), part)
            if key not in cache:
                logger.info("assigning %s buckets: %s, %s part", SLICE_FAMILY, split_dir, part)
                cache[key] = target_buckets(split_dir, part)
            kept[label] = _restrict_row(label, row, bucket, cache[key], metrics, tolerance)
            row["values"] = {m: {u: row["values"][m][u] for u in kept[label]} for m in metrics}
    base = ours if len(per_seed) == 1 else f"{ours} (seed 1)"
    for label, users in kept.items():
        if set(users) != set(kept[base]):
            raise ConfigError(f"{base} and {label} put different users in the {bucket} bucket ({len(kept[base])} "
                              f"and {len(users)}): their splits' training popularity differs")
    return len(kept[base])
