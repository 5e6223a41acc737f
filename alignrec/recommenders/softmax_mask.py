"""Items left out of a training softmax: their logits become -inf, so they take no probability mass and no gradient.

Why: under the cold-item protocol (``recdata.cold_items``) some items have no training interaction. They stand for
items that arrive after training, which a deployed model's training softmax never holds; left in as negatives, every
step pushes their logits down and the model learns "never the answer" (issue 31: 0 of 95 cold ML-100K targets).
``recdata.cold_items.training_softmax_mask`` names them; SASRec, LEARN, the LLM's item head and its code loss pass
that mask (``masked [N]`` bool) to the losses here and in ``alignrec.recommenders.sampled_softmax``. Masked rows keep
their starting values (content-initialised ones stay reachable).

A row whose own target is masked keeps that target's logit: a task that shows every catalogue item (``item2code``)
may target one, and its softmax is then over the unmasked items plus its target, a finite loss in which the other
masked items are still never negatives. At least one item must stay unmasked (``check_mask``), so no row's
log-partition is -inf and no gradient is NaN.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_mask", "mask_bias", "masked_cross_entropy", "with_target"]


def check_mask(masked: torch.Tensor | None, width: int) -> torch.Tensor | None:
    """``masked`` as a bool ``[width]`` tensor (None stays None); ``ValueError`` for another shape or an all-True mask
    (a softmax needs one item left). Run once where a model is set up: ``.all()`` waits for the device."""
    if masked is None:
        return None
    masked = torch.as_tensor(masked, dtype=torch.bool)
    if masked.shape != (width,):
        raise ValueError(f"the softmax mask must be [{width}] (one flag per item), got {tuple(masked.shape)}")
    if bool(masked.all()):
        raise ValueError(f"the softmax mask leaves out all {width} items; a training softmax needs at least one item "
                         "with training interactions")
    return masked


def mask_bias(masked: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``[N]`` additive bias: ``bias`` (zeros when None; float32 or wider) with -inf at the masked columns."""
    dtype = torch.float32 if bias is None else torch.promote_types(bias.dtype, torch.float32)
    base = torch.zeros(masked.shape, dtype=dtype, device=masked.device) if bias is None else bias.to(dtype)
    return base.masked_fill(masked.to(base.device), -math.inf)


def with_target(lse: torch.Tensor, target_logits: torch.Tensor, target_masked: torch.Tensor) -> torch.Tensor:
    """``[P]`` log-partition ``lse`` of the unmasked items, with each row's target added back where it was masked."""
    return torch.where(target_masked, torch.logaddexp(lse, target_logits), lse)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
                         reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits [P, N]`` (float32 or wider) over the columns not ``masked [N]`` plus each row's own
    target ``targets [P]``; ``reduction`` mean | sum | none."""
    target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1)  # [P]
    lse = torch.logsumexp(logits.masked_fill(masked.to(logits.device), -math.inf), dim=1)  # [P]
    losses = with_target(lse, target_logits, masked.to(targets.device)[targets]) - target_logits
    if reduction == "none":
        return losses
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    return losses.mean() if reduction == "mean" else losses.sum()
