"""``SFTTrainer`` with two additions for the code-token rows.

1. Loss path. TRL 1.x computes the loss with a fused LM head that multiplies by ``lm_head.weight`` directly.
   When peft wraps ``lm_head`` in a ``TrainableTokensWrapper`` (tied embeddings, or an untied head with
   trainable rows), that weight is the frozen base matrix: the trained code-token rows would be ignored on the
   output side (and the wrapper has no ``bias``, so TRL crashes first). In that case the loss comes from the
   model's own forward (full logits; fine for small vocabularies, costs memory at 49k x seq x batch).
2. Optimizer. ``code_rows_learning_rate`` puts the code-token rows in their own parameter group with that
   rate; the scheduler scales every group alike, and DeepSpeed (ZeRO-1/2/3 with the HF optimizer) keeps
   per-group rates.
3. Item head. ``item_head`` (``trainer.item_head.ItemHeadTargets``) adds ``item_head_weight`` x the flat item
   loss to the code loss; it needs the full logits, so the loss then comes from the model's own forward too
   (with ``lm_loss`` full; chunked reads the hidden states instead, item 5).
   ``item_head_options`` picks its softmax (full / chunked / sampled, logit adjustment), resolved once the
   training set is prepared (its item targets give the popularity); ``item_head_objective`` holds the result.
4. Packed rows. With TRL's packing (``packing: true``, bfd), ``packed_rows`` keeps each packed row a batch row
   (``trainer.packing.PackedRowsCollator``) instead of flattening the batch into one sequence.
5. Large vocabularies. ``lm_loss`` (``trainer.lm_loss``: auto | full | chunked) resolved ``chunked`` replaces all of
   the above loss paths, training and evaluation alike: the model projects no logits, the code loss and the item head
   come from the last hidden states and the output head's effective rows (trained token rows included), in tiles.
6. Cold items. ``cold_mask`` (``trainer.cold_mask``, the cold-item protocol only) leaves the items without training
   out of the code loss's and the item head's softmaxes, in training and evaluation alike; with ``lm_loss`` full the
   code loss then comes from the model's logits here (``trainer.lm_loss.logits_lm_loss``), not from the model.
"""

from __future__ import annotations

import logging

import torch
from transformers import Trainer
from trl import SFTTrainer

from trainer.cold_mask import ColdItemMask
from trainer.item_head import (
    ItemHeadObjective,
    ItemHeadOptions,
    ItemHeadTargets,
    item_head_loss,
    item_head_loss_from_hidden,
    item_target_counts,
)
from trainer.lm_loss import (
    check_output_head,
    chunked_lm_loss,
    hidden_states_forward,
    lm_loss_manifest,
    logits_lm_loss,
    output_head,
    resolve_lm_loss,
)

logger = logging.getLogger(__name__)

__all__ = ["AlignRecSFTTrainer", "code_row_parameters", "head_loss_scale", "output_head_is_wrapped", "split_param_group"]

TRAINABLE_TOKENS_PARAM = "trainable_tokens_delta"  # peft TrainableTokensLayer's ParameterDict
MODULES_TO_SAVE_PARAM = "modules_to_save"  # peft ModulesToSaveWrapper copies (we only put embeddings there)


def output_head_is_wrapped(model) -> bool:
    from peft.utils.other import TrainableTokensWrapper

    get = getattr(model, "get_output_embeddings", None)
    return get is not None and isinstance(get(), TrainableTokensWrapper)


def code_row_parameters(model) -> list[torch.nn.Parameter]:
    """The trainable parameters that hold code-token rows: peft trainable-token deltas, else peft
    ``modules_to_save`` embedding copies, else (full fine-tuning) the input and output embedding matrices."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for marker in (TRAINABLE_TOKENS_PARAM, MODULES_TO_SAVE_PARAM):
        found = [p for n, p in named if marker in n]
        if found:
            return found
    embeddings = [model.get_input_embeddings(), model.get_output_embeddings()]
    unique = {id(m.weight): m.weight for m in embeddings if m is not None and m.weight.requires_grad}
    return list(unique.values())


def split_param_group(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lr: float) -> int:
    """Move ``params`` out of their groups into new groups (same settings, rate ``lr``); returns how many moved.

    Only valid before the first step (no optimizer state yet), which is when ``create_optimizer`` runs.
    """
    if optimizer.state:
        raise RuntimeError("split_param_group must run before the first optimizer step")
    wanted = {id(p) for p in params}
    moved_groups = []
    for group in optimizer.param_groups:
        take = [p for p in group["params"] if id(p) in wanted]
        if take:
            group["params"] = [p for p in group["params"] if id(p) not in wanted]
            moved_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": take, "lr": lr})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in moved_groups:
        optimizer.add_param_group(group)
    return sum(len(g["params"]) for g in moved_groups)


def head_loss_scale(code_loss_by_items: bool, training: bool, accumulation_steps: int) -> float:
    """Factor that puts a per-micro-batch mean loss on the scale of HF's code loss.

    When the code loss is normalised by the tokens of the whole accumulated batch, the Trainer no longer divides by
    the accumulation steps; a mean over one micro-batch needs that division: ``1 / accumulation_steps``. Otherwise
    (evaluation, or a per-batch mean code loss that the Trainer divides itself) both terms are already alike: 1.

    No device factor: with ``average_tokens_across_devices`` the Trainer multiplies each rank's code loss by the
    device count because it is a partial sum (the rank's tokens over every rank's token count), which the gradient
    average across ranks would shrink; a rank's head mean is whole, and that average of the ranks' means is the mean
    a 1-rank run trains (tests/trainer/test_deepspeed_ranks.py). Multiplied by the devices, the head weighed N times
    its ``item_head_weight`` on N devices.
    """
    if not code_loss_by_items:
        return 1.0
    return 1.0 / accumulation_steps if training else 1.0


class AlignRecSFTTrainer(SFTTrainer):
    def __init__(self, *args, code_rows_learning_rate: float = 0.0, item_head: ItemHeadTargets | None = None,
                 item_head_weight: float = 0.0, item_head_options: ItemHeadOptions | None = None,
                 packed_rows: bool = False, lm_loss: str = "auto", cold_mask: ColdItemMask | None = None,
                 **kwargs) -> None:
        self.code_rows_learning_rate = code_rows_learning_rate
        self.cold_mask = cold_mask
        if item_head_weight and item_head is None:
            raise ValueError("item_head_weight needs item_head (the catalogue's code lookups)")
        self.item_head, self.item_head_weight = item_head, item_head_weight
        self.item_head_objective: ItemHeadObjective | None = None
        super().__init__(*args, **kwargs)
        if item_head_weight:
            head = item_head
            self.item_head_objective = ItemHeadObjective.build(
                item_head_options or ItemHeadOptions(), len(head.leaf_tokens),
                lambda: item_target_counts(self.train_dataset, head), seed=self.args.seed + self.args.process_index,
                masked=None if cold_mask is None else cold_mask.items)
            if self.is_world_process_zero():
                logger.info("item head loss: %s", self.item_head_objective.record)
        self.lm_loss, self.lm_loss_record = self._resolve_lm_loss(lm_loss)
        if packed_rows:
            if not (self.args.packing and self.padding_free):
                raise ValueError("packed_rows keeps TRL's packed rows apart: it needs packing: true with "
                                 "packing_strategy bfd or bfd_split")
            from trainer.packing import PackedRowsCollator

            self.data_collator = PackedRowsCollator(pad_token_id=self._tokenizer.pad_token_id,
                                                    pad_to_multiple_of=self.args.pad_to_multiple_of)

    def _resolve_lm_loss(self, requested: str) -> tuple[str, dict]:
        """``lm_loss`` for this model's vocabulary; a chunked loss checks now that it can read the output head."""
        causal_lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        vocab = int(causal_lm.config.get_text_config().vocab_size)
        kind = resolve_lm_loss(requested, vocab)
        if kind == "chunked":
            from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

            if is_deepspeed_zero3_enabled():
                raise ValueError(f"lm_loss={requested} resolves to chunked (vocabulary {vocab}), which reads the "
                                 "output head's weight outside its forward: not supported under DeepSpeed ZeRO-3 "
                                 "(its weight is partitioned); set lm_loss: full or use ZeRO-2")
            output_head(self.model)  # raises for a head it cannot read (LoRA on lm_head, quantized, softcapping)
        self._head_checked = False
        record = lm_loss_manifest(kind, vocab)
        if self.is_world_process_zero():
            logger.info("lm loss: %s", record)
        return kind, record

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.lm_loss == "chunked" or self.cold_mask is not None:
            return self._own_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.item_head_weight:
            return self._loss_with_item_head(model, inputs, return_outputs, num_items_in_batch)
        if not output_head_is_wrapped(self.model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    def _loss_with_item_head(self, model, inputs, return_outputs, num_items_in_batch):
        inputs["use_cache"] = False
        labels = inputs["labels"]
        loss, outputs = Trainer.compute_loss(self, model, inputs, True, num_items_in_batch)
        self._item_head_to(labels.device)
        head = item_head_loss(outputs.logits, labels, self.item_head, self.item_head_objective,
                              exact=not self.model.training)
        loss = self._add_item_head(loss, head, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _own_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """The code loss (and the item head) computed here, as the model's own loss would be: ``lm_loss: chunked``
        from the last hidden states without the logits (``outputs.logits`` is then empty ``[B, 0, V]``), or, with a
        ``cold_mask`` and ``lm_loss: full``, from the model's logits with the masked tokens left out."""
        labels = inputs["labels"]
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
        by_items = num_items_in_batch is not None and bool(self.model_accepts_loss_kwargs)
        divisor = num_items_in_batch if by_items else None
        tokens = None
        if self.cold_mask is not None:
            if self.cold_mask.tokens.device != labels.device:
                self.cold_mask = self.cold_mask.to(labels.device)
            tokens = self.cold_mask.tokens
        chunked = self.lm_loss == "chunked"
        if chunked:
            outputs, hidden = hidden_states_forward(model, model_inputs)
            head = output_head(self.model)  # read every step: the trained rows and any parametrization change
            if not self._head_checked:
                check_output_head(head, hidden)
                self._head_checked = True
            loss = chunked_lm_loss(hidden, head.weight, labels, head.bias, divisor, masked=tokens)
        else:
            outputs = model(**model_inputs, use_cache=False)
            loss = logits_lm_loss(outputs.logits, labels, tokens, divisor)
        if by_items and self.args.average_tokens_across_devices:  # as Trainer.compute_loss
            loss = loss * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1
                           else self.args.n_gpu)
        if self.item_head_weight:
            self._item_head_to(labels.device)
            if chunked:
                item = item_head_loss_from_hidden(hidden, head.weight, head.bias, labels, self.item_head,
                                                  self.item_head_objective, exact=not self.model.training)
            else:
                item = item_head_loss(outputs.logits, labels, self.item_head, self.item_head_objective,
                                      exact=not self.model.training)
            loss = self._add_item_head(loss, item, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _item_head_to(self, device: torch.device) -> None:
        if self.item_head.leaf_tokens.device != device:
            self.item_head = self.item_head.to(device)
        objective = self.item_head_objective
        if any(t is not None and t.device != device for t in (objective.log_prior, objective.masked)):
            self.item_head_objective = objective.to(device)

    def _add_item_head(self, loss: torch.Tensor, head: torch.Tensor | None, num_items_in_batch) -> torch.Tensor:
        means = self._every_rank_head(head, loss.device)
        if means:  # no empty entry: TRL averages each metric it holds
            self._metrics["train" if self.model.training else "eval"]["item_head_loss"].extend(means)
        if head is None:
            return loss
        return loss + self.item_head_weight * self._head_scale(num_items_in_batch) * head

    def _every_rank_head(self, head: torch.Tensor | None, device: torch.device) -> list[float]:
        """The head loss of every rank's micro-batch (ranks without an item boundary left out), so the logged
        ``item_head_loss`` covers the whole batch as TRL's own metrics do, not rank 0's rows. A collective: every
        rank calls it at every micro-batch, with or without a head loss."""
        local = torch.zeros(1, 2, device=device)  # [1, (head mean, present)]
        if head is not None:
            local[0, 0], local[0, 1] = head.detach().float(), 1.0
        return [mean for mean, present in self.accelerator.gather(local).tolist() if present]

    def _head_scale(self, num_items_in_batch) -> float:
        """Put the head's per-micro-batch mean on the code loss's scale (see ``head_loss_scale``)."""
        by_items = num_items_in_batch is not None and bool(getattr(self, "model_accepts_loss_kwargs", False))
        steps = getattr(self, "current_gradient_accumulation_steps", 1)  # set by the training loop
        return head_loss_scale(by_items, self.model.training, steps)

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.code_rows_learning_rate:
            rows = code_row_parameters(self.model if model is None else model)
            if not rows:
                raise ValueError("code_rows_learning_rate is set but the model has no trainable code-token rows")
            split_param_group(optimizer, rows, self.code_rows_learning_rate)
        return optimizer
