"""Tokenizer quality report: per-level code usage and perplexity, collisions, reconstruction error.

Written as ``report.json`` plus ``code_usage.png`` (bar chart of usage per level) beside the tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdata.io import atomic_path, atomic_write_json
from tokenization.collisions import AssignmentResult

logger = logging.getLogger(__name__)


def level_stats(codes: np.ndarray, codebook_sizes: list[int]) -> list[dict[str, Any]]:
    """Per level: codes used (count, % of the codebook) and perplexity ``exp(entropy of code frequencies)``.

    Perplexity equals the codebook size when items spread uniformly and 1 when all share one code.
    """
    out = []
    for level, size in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=size).astype(np.float64)
        p = counts[counts > 0] / max(counts.sum(), 1.0)
        out.append(
            {
                "level": level,
                "codebook_size": int(size),
                "codes_used": int((counts > 0).sum()),
                "usage_pct": float(100.0 * (counts > 0).sum() / size),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0,
                "max_items_per_code": int(counts.max()) if counts.size else 0,
            }
        )
    return out


@torch.no_grad()
def reconstruction_error(model: Any, vectors: np.ndarray, batch_size: int = 4096) -> dict[str, float]:
    """MSE of the reconstruction against the input (raw units), and relative to the input's variance."""
    device = next(model.parameters()).device
    model.eval()
    se = 0.0
    for start in range(0, len(vectors), batch_size):
        x = torch.from_numpy(np.asarray(vectors[start : start + batch_size], dtype=np.float32)).to(device)
        z_q, _, _ = model.quantize(model.encode(x))
        x_hat = model.decoder(z_q) * model.in_std + model.in_mean  # back to raw units
        se += float(((x_hat - x) ** 2).sum())
    mse = se / max(vectors.size, 1)
    var = float(np.var(vectors))
    return {"recon_mse": mse, "recon_relative": mse / var if var > 0 else float("nan")}


def build_report(
    model: Any, vectors: np.ndarray, raw_codes: np.ndarray, assignment: AssignmentResult, extra: dict | None = None
) -> dict[str, Any]:
    sizes = list(model.cfg.codebook_sizes)
    report = {
        "num_items": int(len(raw_codes)),
        "codebook_sizes": assignment.codebook_sizes,
        "levels_raw": level_stats(raw_codes, sizes),
        "levels": level_stats(assignment.codes, assignment.codebook_sizes),
        **assignment.summary(),
        **reconstruction_error(model, vectors),
        **(extra or {}),
    }
    report["level1_usage_pct"] = report["levels"][0]["usage_pct"]
    return report


def save_report(report: dict[str, Any], out_dir: str | Path) -> None:
    """``report.json`` and ``code_usage.png`` (matplotlib Agg, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    levels = report["levels"]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(levels), 3.2))
    names = [f"L{s['level'] + 1} (C={s['codebook_size']})" for s in levels]
    bars = ax.bar(names, [s["usage_pct"] for s in levels], color="#4878a8")
    for bar, s in zip(bars, levels, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{s['usage_pct']:.0f}%\nppl {s['perplexity']:.0f}",
                ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 115)
    ax.set_ylabel("codes used (%)")
    ax.set_title(f"Code usage per level ({report['num_items']} items, {report['collisions_after']} collisions)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_dir / "code_usage.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
