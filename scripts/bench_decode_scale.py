"""Decoding cost per user as the catalogue grows, for each ``decode_normaliser`` and code depth (issue 34: <= 2x
from 10k to 1M items).

    .venv/bin/python scripts/bench_decode_scale.py --out_json bench_results/decode_scale.json    # 10k / 100k / 1M
    .venv/bin/python scripts/bench_decode_scale.py --items 2000 20000 --batches 2 --out_json /tmp/ds.json  # smoke
    .venv/bin/python scripts/bench_decode_scale.py --levels 1 2 3 --normalisers children \
        --out_json bench_results/decode_scale_levels.json  # deeper (TIGER-like) codes

Setup per catalogue size N and ``levels`` L: a tiny random Phi (hidden 64, 2 layers) whose vocabulary is a few
prompt-word tokens, the code tokens of L RQ levels at ``C = tokenization.auto_codebook_size(N, L)`` (C ~ N^(1/(L+1)))
and one item-id token per item; each item gets L independent uniform random codes (items sharing all L are told apart
by the id). L = 1 (the default) is the shipped ``item_id_level`` layout, built exactly as before this option existed:
its id step scores ~N / C ~ sqrt(N) children per beam. L levels score ~C + beams x (C x (L - 1) + N / C^L) edges per
user, growing as N^(1/(L+1)), for L + 1 decode steps instead of 2. Each user's prompt is the code tokens of a random
history (its last ``prompt_len`` tokens, L + 1 per item), and the history is excluded, as evaluation does.
``constrained_beam_search`` runs on ``users`` users per batch with ``num_beams`` beams, for every normaliser
(vocabulary: exact log-probs; children: normalised over each node's trie children) with and without the item head's
term. Reported per cell: in-process CPU ms per user (``time.process_time``, the median of ``batches`` batches after
``warmup`` batches: the children mode's once-per-model guard falls in the warm-up), wall ms, the trie edges scored
per user at each step (the live beams' children: the cost that grows with N), and the peak RSS growth of the cell
(each cell runs in a forked child: its ``VmHWM`` minus its ``VmRSS`` at the start, less the library pages it maps
in, Linux ``/proc``); then the growth of each (levels, mode), CPU ms at the largest size over the smallest. Prints a
Markdown table and writes JSON (every cell with its levels and codebook). CPU only, ``threads`` torch threads (1 by
default).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.beam_search import constrained_beam_search  # noqa: E402
from inference.decode_normaliser import describe_normaliser  # noqa: E402
from inference.trie import ItemTrie  # noqa: E402
from recdata.config import config_to_dict, parse_config  # noqa: E402
from recdata.io import atomic_write_json  # noqa: E402
from tokenization import auto_codebook_size  # noqa: E402

logger = logging.getLogger("bench_decode_scale")

WORD_TOKENS = 64  # prompt-word tokens at the start of the vocabulary (ids 0..63), before the code tokens


@dataclass
class BenchDecodeScaleConfig:
    items: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000], metadata={
        "help": "Catalogue sizes; the growth is CPU ms per user at the largest over the smallest."})
    levels: list[int] = field(default_factory=lambda: [1], metadata={
        "help": "RQ levels before the item-id token, each at auto_codebook_size(N, levels); 1 = the shipped layout."})
    normalisers: list[str] = field(default_factory=lambda: ["vocabulary", "children"], metadata={
        "help": "decode_normaliser modes to time (vocabulary, children, auto)."})
    head_weights: list[float] = field(default_factory=lambda: [0.0, 1.0], metadata={
        "help": "Item-head weights to time (0 = no head term)."})
    users: int = field(default=64, metadata={"help": "Users per beam-search batch."})
    num_beams: int = field(default=30, metadata={"help": "Beam width."})
    prompt_len: int = field(default=20, metadata={"help": "Prompt tokens per user (its history's code tokens)."})
    hidden_size: int = field(default=64, metadata={"help": "Hidden size of the tiny Phi."})
    num_layers: int = field(default=2, metadata={"help": "Decoder layers of the tiny Phi."})
    warmup: int = field(default=1, metadata={"help": "Untimed batches before the timed ones, per cell."})
    batches: int = field(default=3, metadata={"help": "Timed batches per cell (the median is reported)."})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads."})
    isolate: bool = field(default=True, metadata={
        "help": "Run each cell in a forked child, so its peak RSS is its own (Linux); false = in this process "
                "(peak RSS growth then not reported)."})
    seed: int = field(default=0, metadata={"help": "Seed for the model, clusters and histories."})
    out_json: str = field(default="bench_results/decode_scale.json", metadata={"help": "Where the JSON goes."})

    def __post_init__(self) -> None:
        bad = [n for n in self.normalisers if n not in ("auto", "vocabulary", "children")]
        if bad or not self.normalisers:
            raise ValueError(f"normalisers must be auto, vocabulary or children, got {self.normalisers}")
        if not self.items or min(self.items) < 2:
            raise ValueError(f"items must be catalogue sizes >= 2, got {self.items}")
        if not self.levels or min(self.levels) < 1:
            raise ValueError(f"levels must be RQ level counts >= 1, got {self.levels}")
        if min(self.users, self.num_beams, self.prompt_len, self.batches, self.threads, self.num_layers) < 1:
            raise ValueError("users, num_beams, prompt_len, batches, threads and num_layers must be >= 1")
        if self.warmup < 0 or any(w < 0 for w in self.head_weights) or not self.head_weights:
            raise ValueError(f"warmup and head_weights must be >= 0, got {self.warmup}, {self.head_weights}")


@dataclass
class Catalogue:
    """One size's model, trie and batches: ``prompts[b] [users, prompt_len]``, ``exclude[b]`` the histories."""

    num_items: int
    levels: int
    codebook: int
    model: Any
    trie: ItemTrie
    prompts: list[torch.Tensor]
    exclude: list[list[list[int]]]
    setup_s: float


def item_token_ids(num_items: int, levels: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(C, ``[N, levels + 1]`` token ids): ``levels`` uniform random codes per item (level ``l`` at
    ``WORD_TOKENS + l * C``), then the item-id token at ``WORD_TOKENS + levels * C + item``. One ``rng.integers``
    call of ``N * levels`` draws, so ``levels=1`` draws, and builds, exactly the one-level catalogue of before."""
    codebook = auto_codebook_size(num_items, levels)
    codes = rng.integers(0, codebook, size=num_items * levels).reshape(num_items, levels)  # [N, L]
    item_tokens = WORD_TOKENS + levels * codebook + np.arange(num_items)  # [N]
    return codebook, np.concatenate([WORD_TOKENS + codebook * np.arange(levels) + codes, item_tokens[:, None]], 1)


def build_catalogue(num_items: int, cfg: BenchDecodeScaleConfig, levels: int = 1) -> Catalogue:
    """Random codes (``levels`` RQ levels at the balanced auto codebook size, then the item-id token) and a tiny
    random Phi; ``levels=1`` is the catalogue, prompts and model this script built before ``levels`` existed."""
    from transformers import PhiConfig, PhiForCausalLM

    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    codebook, token_ids = item_token_ids(num_items, levels, rng)  # [N, levels + 1]
    trie = ItemTrie(token_ids)
    torch.manual_seed(cfg.seed)
    model = PhiForCausalLM(PhiConfig(
        vocab_size=WORD_TOKENS + levels * codebook + num_items, hidden_size=cfg.hidden_size,
        intermediate_size=2 * cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=4,
        max_position_embeddings=cfg.prompt_len + levels + 7,  # the prompt, levels + 1 decode steps, slack
        resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, pad_token_id=0)).eval()
    history_len = -(-cfg.prompt_len // (levels + 1))  # levels + 1 code tokens per history item
    prompts, exclude = [], []
    for _ in range(cfg.warmup + cfg.batches):
        history = rng.integers(0, num_items, size=(cfg.users, history_len))  # [users, history]
        prompts.append(torch.from_numpy(token_ids[history].reshape(cfg.users, -1)[:, -cfg.prompt_len:].copy()))
        exclude.append(history.tolist())
    return Catalogue(num_items, levels, codebook, model, trie, prompts, exclude, time.perf_counter() - started)


def _proc_status_mb(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}: peak RSS per cell needs Linux (or --isolate false)")


def measure(cat: Catalogue, normaliser: str, head_weight: float, cfg: BenchDecodeScaleConfig,
            isolated: bool) -> dict[str, Any]:
    """CPU and wall ms per user (medians over the timed batches), the trie edges scored per user at each decode step
    (means over the timed batches) and, isolated, the cell's peak RSS growth: ``VmHWM`` minus ``VmRSS`` at the start,
    less the growth of ``RssFile`` (a forked child maps the libraries' code pages in as it runs them: shared with the
    parent, ~100 MB that no decoding mode allocates)."""
    if isolated:  # a forked child inherits the parent's high-water mark (a larger catalogue built before): reset it
        Path("/proc/self/clear_refs").write_text("5")
    rss, files = (_proc_status_mb("VmRSS"), _proc_status_mb("RssFile")) if isolated else (None, None)
    cpu, wall = [], []
    edges = np.zeros(cat.trie.code_len)  # [steps] edges scored in the timed batches
    step_edges = np.zeros(cat.trie.code_len)  # [steps] this batch's
    children_csr = cat.trie.children_csr

    def counting_children_csr(depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = children_csr(depth, nodes)  # the search's one call per step: every live beam's children
        step_edges[depth] += out[0].numel()
        return out

    cat.trie.children_csr = counting_children_csr  # an instance attribute: shadows the method, removed below
    try:
        for b, ids in enumerate(cat.prompts):
            step_edges[:] = 0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            out = constrained_beam_search(cat.model, ids, torch.ones_like(ids), cat.trie, cfg.num_beams,
                                          cat.exclude[b], item_head_weight=head_weight, normaliser=normaliser)
            if b >= cfg.warmup:
                cpu.append((time.process_time() - cpu0) / len(ids))
                wall.append((time.perf_counter() - wall0) / len(ids))
                edges += step_edges / len(ids)
            assert bool((out.items >= 0).all()), "a beam died: the catalogue is too small for the beams"
    finally:
        del cat.trie.children_csr
    edges /= len(cpu)
    return {"cpu_ms_per_user": 1e3 * statistics.median(cpu), "wall_ms_per_user": 1e3 * statistics.median(wall),
            "cpu_ms_per_user_batches": [1e3 * c for c in cpu], "edges_per_user": float(edges.sum()),
            "edges_per_user_step": edges.tolist(),
            "peak_rss_growth_mb": _proc_status_mb("VmHWM") - rss - (_proc_status_mb("RssFile") - files)
            if isolated else None}


def run_in_child(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()`` in a forked child (its peak RSS is its own), its result back as JSON; a failure is raised here."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, write, leave without running the parent's exit handlers
        os.close(read_fd)
        try:
            payload = {"ok": fn()}
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write_fd, "w") as f:
            json.dump(payload, f)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        raise RuntimeError(f"the measuring child died (wait status {status}), e.g. killed for memory")
    payload = json.loads(text)
    if "error" in payload:
        raise RuntimeError(payload["error"])
    return payload["ok"]


def mode_name(normaliser: str, head_weight: float, levels: int = 1) -> str:
    """The table's row name: the layout is part of the mode (C differs per size, so it is in each cell)."""
    head = f"head {head_weight:g}" if head_weight else "no head"
    return f"{normaliser}, {head}, {levels} RQ level{'s' if levels > 1 else ''}"


def growth_table(cells: list[dict[str, Any]], sizes: list[int]) -> tuple[dict[str, float | None], str]:
    """Each (levels, mode)'s growth (CPU ms per user at the largest size / at the smallest) and the Markdown table;
    a cell shows CPU ms per user (peak RSS growth), its codebook C and the trie edges scored per user."""
    by_mode: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in cells:
        name = mode_name(cell["normaliser"], cell["head_weight"], cell["levels"])
        by_mode.setdefault(name, {})[cell["items"]] = cell
    lo, hi = min(sizes), max(sizes)
    growth: dict[str, float | None] = {}
    lines = ["| mode | " + " | ".join(f"{n:,} items" for n in sizes) + f" | growth {hi:,} / {lo:,} |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for mode, row in by_mode.items():
        ok = lo in row and hi in row and "error" not in row[lo] and "error" not in row[hi]
        growth[mode] = row[hi]["cpu_ms_per_user"] / row[lo]["cpu_ms_per_user"] if ok else None
        shown = []
        for n in sizes:
            cell = row.get(n, {"error": "not run"})
            if "error" in cell:
                shown.append(f"failed: {cell['error'][:40]}")
                continue
            rss = cell["peak_rss_growth_mb"]
            shown.append(f"{cell['cpu_ms_per_user']:.2f} ms" + (f" (+{rss:,.0f} MB)" if rss is not None else "")
                         + f", C={cell['codebook']}, {cell['edges_per_user']:,.0f} edges")
        ratio = "-" if growth[mode] is None else f"{growth[mode]:.1f}x"
        lines.append(f"| {mode} | " + " | ".join(shown) + f" | {ratio} |")
    return growth, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([BenchDecodeScaleConfig], argv)
    torch.set_num_threads(cfg.threads)
    cells, catalogues = [], []
    for n, levels in ((n, levels) for n in sorted(cfg.items) for levels in cfg.levels):
        cat = build_catalogue(n, cfg, levels)
        nodes = cat.trie.num_nodes
        catalogues.append({"items": n, "levels": levels, "codebook": cat.codebook, "vocab": cat.model.config.vocab_size,
                           "mean_children_per_cluster": n / nodes[levels],  # the id step's fan-out
                           "mean_children_per_depth": [nodes[d + 1] / nodes[d] for d in range(levels + 1)],
                           "setup_s": cat.setup_s})
        logger.info("%d items, levels %d: codebook %d, vocab %d, set up in %.1f s", n, levels, cat.codebook,
                    cat.model.config.vocab_size, cat.setup_s)
        if not catalogues[:-1]:  # lazy imports (peft, transformers' attention code) here, not in each child's RSS
            for normaliser in cfg.normalisers:
                ids = cat.prompts[0][:1]
                constrained_beam_search(cat.model, ids, torch.ones_like(ids), cat.trie, cfg.num_beams,
                                        item_head_weight=max(cfg.head_weights), normaliser=normaliser)
        for normaliser in cfg.normalisers:
            for weight in cfg.head_weights:
                name = mode_name(normaliser, weight, levels)
                cell = {"items": n, "levels": levels, "codebook": cat.codebook, "normaliser": normaliser,
                        "head_weight": weight, "resolved": describe_normaliser(normaliser, n)}
                try:
                    work = functools.partial(measure, cat, normaliser, weight, cfg, cfg.isolate)
                    cell.update(run_in_child(work) if cfg.isolate else work())
                    logger.info("%s @ %d items: %.2f CPU ms / user, %.0f edges / user", name, n,
                                cell["cpu_ms_per_user"], cell["edges_per_user"])
                except RuntimeError as exc:
                    cell["error"] = str(exc)
                    logger.warning("%s @ %d items failed: %s", name, n, exc)
                cells.append(cell)
        del cat
    growth, table = growth_table(cells, sorted(cfg.items))
    result = {"config": config_to_dict(cfg), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "catalogues": catalogues, "cells": cells,
              "growth": growth}
    print(f"\nCPU ms per user (peak RSS growth), codebook C and trie edges scored per user, {cfg.users} users x "
          f"{cfg.num_beams} beams, {cfg.prompt_len}-token prompts, Phi hidden {cfg.hidden_size} x {cfg.num_layers} layers, {torch.get_num_threads()} thread(s)")
    print(table)
    atomic_write_json(cfg.out_json, result)
    print(f"wrote {cfg.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
