"""The causal-LM loss from the final hidden states, in tiles: no ``[batch, seq, vocab]`` logits at any vocabulary.

With ``tokenizer.item_id_level: true`` every item owns a vocabulary token, so at 1M items the LM head has ~1M rows
and the model's own loss (``model(..., labels=...)``) keeps ``[B, T, V]`` logits, their float32 copy and their
gradient: about 21 GB per copy for 128 rows x 42 tokens. ``lm_loss`` (the config key) picks the path:

- ``full``: as before (TRL's fused head when nothing else needs the output rows, else the model's own forward).
- ``chunked``: the model runs with ``logits_to_keep`` = no position (so its LM head projects nothing), its last
  hidden states caught from its base decoder (``hidden_states_forward``), and ``chunked_lm_loss`` computes the same
  mean token CE from them and the output head's effective weight and bias (``output_head``: tied or untied, peft
  trainable-token rows or ``modules_to_save`` copies, content-rows parametrizations), through
  ``alignrec.recommenders.sampled_softmax.linear_logsumexp``: the log-partition over the vocabulary in tiles of
  ``POSITION_CHUNK`` positions x ``chunk`` tokens, recomputed in the backward, so memory is one tile however large
  the vocabulary. The flat item head then reads the same hidden states (``trainer.item_head.item_head_loss_from_hidden``).
- ``auto``: ``chunked`` from ``AUTO_CHUNKED_MIN_VOCAB`` tokens on (the item softmaxes' 100,000), else ``full``.

Under the cold-item protocol (``trainer.cold_mask``) the code loss leaves some tokens out of every position's softmax
(``masked [V]``): ``chunked_lm_loss`` through a -inf bias on its tiles, ``logits_lm_loss`` on the model's logits
(the ``full`` path then computes the loss here rather than in the model).
"""

from __future__ import annotations

import torch

from alignrec.recommenders.sampled_softmax import AUTO_SAMPLED_MIN_ITEMS, DEFAULT_CHUNK, linear_logsumexp
from alignrec.recommenders.softmax_mask import mask_bias, masked_cross_entropy, with_target

__all__ = ["AUTO_CHUNKED_MIN_VOCAB", "LM_LOSSES", "MANIFEST_KEY", "OutputHead", "check_output_head", "chunked_lm_loss",
           "decoder_module", "hidden_states_forward", "lm_loss_manifest", "logits_lm_loss", "output_head",
           "resolve_lm_loss"]

IGNORE_INDEX = -100
LM_LOSSES = ("auto", "full", "chunked")
AUTO_CHUNKED_MIN_VOCAB = AUTO_SAMPLED_MIN_ITEMS  # auto: chunked from this many vocabulary tokens on
MANIFEST_KEY = "lm_loss"  # alignrec_train.json: {"loss": full | chunked, "vocab_size": V}
# Config fields whose model forward transforms the logits after the LM head (softcapping, scaling): the chunked
# loss computes ``hidden @ W.T + b`` only, so it refuses these models rather than train on other logits.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling")


def resolve_lm_loss(kind: str, vocab_size: int) -> str:
    """The loss actually used: ``auto`` -> ``chunked`` from ``AUTO_CHUNKED_MIN_VOCAB`` tokens on, else ``full``."""
    if kind not in LM_LOSSES:
        raise ValueError(f"lm_loss={kind!r} is not one of {list(LM_LOSSES)}")
    if kind != "auto":
        return kind
    return "chunked" if vocab_size >= AUTO_CHUNKED_MIN_VOCAB else "full"


def lm_loss_manifest(kind: str, vocab_size: int) -> dict:
    """The run record's entry: which causal-LM loss trained the run, at which vocabulary size."""
    return {MANIFEST_KEY: {"loss": kind, "vocab_size": int(vocab_size)}}


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor | None = None,
                    num_items_in_batch: torch.Tensor | int | None = None, chunk: int = DEFAULT_CHUNK,
                    masked: torch.Tensor | None = None) -> torch.Tensor:
    """The model's causal-LM loss from ``hidden [B, T, H]`` (the last, normed states) and the head ``weight [V, H]``
    (+ ``bias [V]``): logits at ``t`` predict ``labels[t + 1]``, ``-100`` unsupervised; the summed token CE divided
    by ``num_items_in_batch`` when given (HF's loss over an accumulated batch), else by the supervised count (the
    mean). Exact, in float32 or wider; only supervised positions are scored. ``masked [V]``: tokens left out of every
    position's softmax (a position whose target is one keeps it)."""
    shifted = labels[:, 1:].to(hidden.device)  # [B, T-1]: what the states at each position predict
    mask = shifted != IGNORE_INDEX
    states = hidden[:, :-1][mask]  # [P, H]
    targets = shifted[mask]  # [P]
    lse = linear_logsumexp(states, weight, chunk, bias=bias if masked is None else mask_bias(masked, bias))  # [P]
    target_logits = (states.to(lse.dtype) * weight[targets].to(lse.dtype)).sum(-1)  # [P]
    if bias is not None:
        target_logits = target_logits + bias[targets].to(lse.dtype)
    if masked is not None:
        lse = with_target(lse, target_logits, masked.to(targets.device)[targets])
    return _per_token(lse - target_logits, mask, num_items_in_batch)


def logits_lm_loss(logits: torch.Tensor, labels: torch.Tensor, masked: torch.Tensor,
                   num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """``chunked_lm_loss`` from the model's own logits ``[B, T, V]`` (``lm_loss: full`` under the cold-item
    protocol): the same shift, normalisation and ``masked [V]`` tokens, in float32 as the model's own loss."""
    shifted = labels[:, 1:].to(logits.device)  # [B, T-1]
    mask = shifted != IGNORE_INDEX
    z = logits[:, :-1][mask].float()  # [P, V]
    return _per_token(masked_cross_entropy(z, shifted[mask], masked, reduction="none"), mask, num_items_in_batch)


def _per_token(losses: torch.Tensor, mask: torch.Tensor, num_items_in_batch: torch.Tensor | int | None) -> torch.Tensor:
    """Summed token losses ``[P]`` over ``num_items_in_batch`` when given, else over the supervised count."""
    total = losses.sum()
    if num_items_in_batch is None:
        return total / mask.sum().clamp(min=1)  # a batch without supervised tokens: a finite zero
    return total / torch.as_tensor(num_items_in_batch, device=total.device)


class OutputHead:
    """The effective linear map of a causal LM's output module: ``logits = hidden @ weight.T + bias``."""

    def __init__(self, module: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.module, self.weight, self.bias = module, weight, bias


def output_head(model) -> OutputHead:
    """The output head of ``model`` (a HF causal LM, or a peft model around one) as weight and bias, read through
    whatever wraps it: peft ``TrainableTokensWrapper`` (base rows with the trained token rows in; peft drops a
    Linear head's bias there, so none), ``ModulesToSaveWrapper`` (the active copy), parametrizations (content rows).
    Any other module, or a model whose forward transforms the logits (``LOGIT_TRANSFORMS``), raises ``ValueError``."""
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config.get_text_config()
    for name in LOGIT_TRANSFORMS:
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise ValueError(f"lm_loss=chunked computes logits as hidden @ W.T + b, but this model's config sets "
                             f"{name}={getattr(config, name)!r}, which its forward applies to the logits; set "
                             "lm_loss: full")
    head = causal_lm.get_output_embeddings()
    module = head
    if isinstance(head, ModulesToSaveWrapper):
        active = head.active_adapters
        module = head.modules_to_save[active[0]] if active and not head.disable_adapters else head.original_module
    elif isinstance(head, TrainableTokensWrapper):
        layer = head.token_adapter
        if layer.disable_adapters or layer.merged or not layer.active_adapters:
            module = layer.base_layer
        else:
            if not isinstance(layer.base_layer, torch.nn.Linear):
                raise ValueError(f"lm_loss=chunked: trainable tokens around a {type(layer.base_layer).__name__} "
                                 "output head are not supported; set lm_loss: full")
            return OutputHead(head, layer.get_merged_weights(layer.active_adapters), None)
    if type(module) is not torch.nn.Linear and not _is_parametrized_linear(module):
        raise ValueError(f"lm_loss=chunked reads the output head's weight, but it is a {type(module).__name__} "
                         "(e.g. LoRA on lm_head or a quantized head), not a plain Linear; set lm_loss: full")
    return OutputHead(head, module.weight, module.bias)


def _is_parametrized_linear(module: torch.nn.Module) -> bool:
    from torch.nn.utils import parametrize

    return isinstance(module, torch.nn.Linear) and parametrize.is_parametrized(module)


@torch.no_grad()
def check_output_head(head: OutputHead, hidden: torch.Tensor, positions: int = 4) -> None:
    """Guard against training on other logits than the model's: the head module applied to a few states must equal
    ``hidden @ weight.T + bias``. Cheap (``[positions, V]``); the trainer runs it once."""
    states = hidden.reshape(-1, hidden.shape[-1])[:positions]
    if states.shape[0] == 0:
        return
    expected = head.module(states).float()
    got = torch.nn.functional.linear(states, head.weight.to(states.dtype),
                                     None if head.bias is None else head.bias.to(states.dtype)).float()
    tolerance = 1e-4 if states.dtype == torch.float32 else 2e-2
    scale = expected.abs().max().clamp(min=1.0)
    if not bool(((got - expected).abs().max() <= tolerance * scale).item()):
        raise ValueError(f"lm_loss=chunked: the output head {type(head.module).__name__} does not compute "
                         "hidden @ weight.T + bias from the weight it exposes; set lm_loss: full")


def decoder_module(model) -> torch.nn.Module:
    """The base decoder under ``model``'s output head: the module whose output's ``last_hidden_state`` (after the
    final norm) the head reads. Unwraps DDP / DeepSpeed (``.module``) and peft (``get_base_model()``: its LoRA layers
    and token rows are injected in place, so the decoder runs them), then the causal LM's ``get_decoder()``
    (``model`` of Llama / Phi, ``transformer`` of GPT-2). Raises ``ValueError`` for a model without one."""
    inner = model
    while isinstance(getattr(inner, "module", None), torch.nn.Module):  # DDP, DeepSpeed engine
        inner = inner.module
    causal_lm = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    get = getattr(causal_lm, "get_decoder", None)
    try:
        decoder = get() if callable(get) else None
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    if not isinstance(decoder, torch.nn.Module) or decoder is causal_lm:  # get_decoder() of a decoder: itself
        raise ValueError(f"lm_loss=chunked reads the last hidden states from the base decoder under the output head "
                         f"(get_decoder()), which {type(causal_lm).__name__} does not have; set lm_loss: full")
    return decoder


def hidden_states_forward(model, inputs: dict):
    """Run ``model`` (any wrapper: DDP, DeepSpeed, peft) on ``inputs`` (no labels) with the LM head projecting no
    position; returns ``(outputs, hidden [B, T, H])``, the last hidden states after the final norm (what the head
    reads), in the autograd graph.

    The wrapper's own forward runs (DDP / DeepSpeed gradient hooks, peft), and ``hidden`` is the
    ``last_hidden_state`` of the base decoder (``decoder_module``), caught by a forward hook of ours that lives for
    this call only. Never ``output_hidden_states`` (set False, over a config that asks for it): in transformers 5
    its first use installs output-capturing hooks on every submodule for good (closures over a ``ContextVar``),
    after which the model no longer pickles (e.g. into a Ray factory). Gradient checkpointing recomputes decoder
    layers in the backward, after the hook is gone; the decoder itself runs once per forward."""
    decoder = decoder_module(model)
    device = inputs["input_ids"].device if "input_ids" in inputs else None
    nothing = torch.zeros(0, dtype=torch.long, device=device)  # logits_to_keep: no position -> logits [B, 0, V]
    caught = []
    handle = decoder.register_forward_hook(lambda _module, _args, output: caught.append(
        getattr(output, "last_hidden_state", None)))
    try:
        outputs = model(**inputs, use_cache=False, output_hidden_states=False, logits_to_keep=nothing)
    finally:
        handle.remove()
    if len(caught) != 1 or caught[0] is None:
        found = f"ran it {len(caught)} times" if len(caught) != 1 else "got no last_hidden_state from it"
        raise ValueError(f"lm_loss=chunked reads the last hidden states from the base decoder "
                         f"{type(decoder).__name__}, but the model's forward {found}; set lm_loss: full")
    return outputs, caught[0]  # [B, T, H]
