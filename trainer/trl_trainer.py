"""``SFTTrainer`` with one fix for code-token rows trained through peft ``trainable_token_indices``.

TRL 1.x computes the loss with a fused LM head that multiplies by ``lm_head.weight`` directly. When peft wraps
``lm_head`` in a ``TrainableTokensWrapper`` (tied embeddings, or an untied head with trainable rows), that
weight is the frozen base matrix: the trained code-token rows would be ignored on the output side (and the
wrapper has no ``bias``, so TRL crashes first). In that case the loss comes from the model's own forward
(full logits; fine for small vocabularies, costs memory at 49k x seq x batch).
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer


def output_head_is_wrapped(model) -> bool:
    from peft.utils.other import TrainableTokensWrapper

    get = getattr(model, "get_output_embeddings", None)
    return get is not None and isinstance(get(), TrainableTokensWrapper)


class AlignRecSFTTrainer(SFTTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not output_head_is_wrapped(self.model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
