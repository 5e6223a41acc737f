"""trl ``DPOTrainer`` with two fixes for models whose code-token rows are trained through peft.

1. The reference adapter. For a pretrained (SFT) adapter trl adds a frozen ``ref`` adapter and copies only the
   parameters named ``*.default.*`` into it; the trainable-token rows (``trainable_tokens_delta.default``) are
   missed, so the reference would score code tokens with their pre-SFT rows. We copy every adapter parameter
   (``trainer.dpo_model.copy_adapter_weights``) right after trl built it.
2. The output head. trl computes log-probs with a fused head that multiplies by ``lm_head.weight`` directly. Under
   peft that is the frozen base matrix: a ``TrainableTokensWrapper`` (tied embeddings, or trainable output rows)
   or a ``modules_to_save`` copy holds the trained code rows elsewhere, so both policy and reference would ignore
   them (and the wrapper has no ``bias``, so trl fails first). For peft models the log-probs therefore come from
   the model's own forward (full logits, as ``AlignRecSFTTrainer`` does for SFT); full models keep trl's head.

No loss is hand-written: every DPO loss, metric, checkpoint and resume path is trl's.
"""

from __future__ import annotations

import types

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from trainer.dpo_model import REF_ADAPTER, copy_adapter_weights

__all__ = ["AlignRecDPOTrainer", "use_model_logits_for_log_probs"]


def use_model_logits_for_log_probs(model) -> None:
    """Make ``model(..., labels=L, fused_lm_head=True)`` (trl's call) score labels with the model's own logits.

    Returns what trl's fused head returns (per-token log-probs, entropy, mean logit, top-1 hit; zero where the
    label is -100), so every trl metric still works. Without ``fused_lm_head`` the forward is unchanged.
    """
    original = type(model).forward

    def forward(self, *args, fused_lm_head: bool = False, labels=None, **kwargs):
        if not fused_lm_head:
            if labels is not None:
                kwargs["labels"] = labels
            return original(self, *args, **kwargs)
        kwargs["use_cache"] = False
        logits = original(self, *args, **kwargs).logits[:, :-1].float()  # [B, T-1, V]
        labels = labels[:, 1:]  # [B, T-1]
        mask = labels != -100
        log_softmax = torch.log_softmax(logits, dim=-1)  # [B, T-1, V]
        log_probs = log_softmax.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
        with torch.no_grad():
            entropy = -(log_softmax.exp() * log_softmax).sum(-1).masked_fill(~mask, 0.0)  # [B, T-1]
            mean_logits = logits.mean(-1).masked_fill(~mask, 0.0)
            is_top1 = (logits.argmax(-1) == labels) & mask
        loss = -log_probs.sum() / mask.sum().clamp(min=1)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, mean_logits=mean_logits,
                                   is_top1=is_top1, label_mask=mask)

    model.forward = types.MethodType(forward, model)


class AlignRecDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose reference is the SFT model exactly (code-token rows included); see the module doc."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if is_peft_model(self.model):
            if REF_ADAPTER not in self.model.peft_config:
                raise RuntimeError(f"trl did not add the {REF_ADAPTER!r} reference adapter; this trl version builds "
                                   "the reference differently: check trainer/dpo_trainer.py against it")
            copy_adapter_weights(self.model, "default", REF_ADAPTER)
            use_model_logits_for_log_probs(self.model.get_base_model())
