"""Per-task counts and token lengths, measured with the training tokenizer (code tokens added)."""

from __future__ import annotations

import copy
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm


def tokenizer_with_codes(hf_tokenizer: Any, item_tokenizer: Any, user_tokens: int = 0) -> Any:
    """``hf_tokenizer`` itself when it already holds the code grid (and ``user_tokens`` user tokens), else an
    extended copy, user tokens first as the trainer adds them (caller's untouched)."""
    from sft_tasks.user_tokens import add_user_tokens, user_token

    vocab = hf_tokenizer.get_vocab()
    if all(t in vocab for t in item_tokenizer.code_tokens()) and (not user_tokens or user_token(user_tokens - 1) in vocab):
        return hf_tokenizer
    extended = copy.deepcopy(hf_tokenizer)
    if user_tokens:
        add_user_tokens(extended, user_tokens)
    item_tokenizer.add_to_tokenizer(extended)
    return extended


def _summary(lengths: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """mean / p50 / p95 / max; ``weights`` (inverse sampling rates) make a mixed-rate sample representative."""
    if not len(lengths):
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    w = np.ones(len(lengths)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    cdf = np.cumsum(w[order]) / w.sum()
    p50, p95 = (float(lengths[order][min(np.searchsorted(cdf, q), len(order) - 1)]) for q in (0.5, 0.95))
    return {"mean": round(float(np.average(lengths, weights=w)), 2), "p50": p50, "p95": p95, "max": float(lengths.max())}


def token_lengths(tokenizer: Any, texts: list[str], batch_size: int = 8192) -> np.ndarray:
    """Token counts without special tokens; uses the Rust backend's offset-free batch encoder when present."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    out: list[int] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="token stats", unit="batch", leave=False):
        batch = texts[start:start + batch_size]
        if fast is not None:
            out.extend(len(e.ids) for e in fast(batch, add_special_tokens=False))
        else:
            out.extend(len(x) for x in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return np.asarray(out, dtype=np.int64)


def _task_codes(ds: datasets.Dataset) -> tuple[np.ndarray, list[str]]:
    """Each row's task as an index into the task names (in order of first appearance): 4 bytes a row, where a
    list of the column's strings would cost ~60 (a written build is memory-mapped; this reads one column)."""
    column = ds.data.table.column("task")
    names = pc.unique(column)
    return np.asarray(pc.index_in(column, value_set=names).to_numpy(zero_copy_only=False), dtype=np.int64), names.to_pylist()


def _take(ds: datasets.Dataset, name: str, rows: np.ndarray) -> list[str]:
    """The values of column ``name`` at ``rows`` (only those rows are read)."""
    return ds.data.table.column(name).take(pa.array(rows, type=pa.int64())).to_pylist()


def dataset_stats(ds: datasets.Dataset, tokenizer: Any, sample: int = 0, seed: int = 0) -> dict[str, Any]:
    """``{task: {count, sampled, prompt_tokens{...}, completion_tokens{...}, total_tokens}}`` plus ``total``.

    With ``sample > 0`` token lengths come from at most ``sample`` random examples per task (tokenizing 100k+
    chat prompts dominates build time on a small CPU); counts are exact and ``total_tokens`` is
    ``count x mean``, so the total row mixes tasks in their true proportions. Only the task column and the
    sampled rows are read.
    """
    codes, names = _task_codes(ds)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(len(names)):
        idx = np.flatnonzero(codes == k)
        rows.append(np.sort(rng.choice(idx, sample, replace=False)) if sample and len(idx) > sample else idx)
    chosen = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    prompt_len = token_lengths(tokenizer, _take(ds, "prompt", chosen))
    completion_len = token_lengths(tokenizer, _take(ds, "completion", chosen))
    chosen_codes = codes[chosen]
    out: dict[str, Any] = {}
    total = {"count": 0, "sampled": 0, "total_tokens": 0}
    for k, name in enumerate(names):
        mask = chosen_codes == k
        count = int((codes == k).sum())
        # +1 per example: the EOS the trainer appends to each completion
        per_example = float(prompt_len[mask].mean() + completion_len[mask].mean() + 1)
        out[name] = {
            "count": count,
            "sampled": int(mask.sum()),
            "prompt_tokens": _summary(prompt_len[mask]),
            "completion_tokens": _summary(completion_len[mask]),
            "total_tokens": int(round(per_example * count)),
        }
        for key in total:
            total[key] += out[name][key]
    rate = np.array([out[name]["count"] / max(out[name]["sampled"], 1) for name in names])
    weights = rate[chosen_codes] if len(chosen) else None
    out["total"] = {**total, "prompt_tokens": _summary(prompt_len, weights),
                    "completion_tokens": _summary(completion_len, weights)}
    return out


def format_table(stats: dict[str, Any]) -> str:
    header = f"{'task':<12} {'count':>8} {'prompt mean':>11} {'p95':>6} {'max':>6} {'compl mean':>10} {'tokens':>11}"
    lines = [header, "-" * len(header)]
    for name, s in stats.items():
        p, c = s["prompt_tokens"], s["completion_tokens"]
        lines.append(f"{name:<12} {s['count']:>8} {p['mean']:>11.1f} {p['p95']:>6.0f} {p['max']:>6.0f} "
                     f"{c['mean']:>10.1f} {s['total_tokens']:>11}")
    return "\n".join(lines)
