"""``lm_loss: chunked`` leaves the model as it found it: a training step adds no hook (transformers 5's
output-capturing hooks, which ``output_hidden_states`` would install, do not pickle), the model still pickles and
its loss and gradients equal the full loss; the decoder is found through DDP / DeepSpeed / peft wrappers, or the
loss refuses. Helpers from ``test_lm_loss`` (tiny models, batches, tolerances)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import alignrec.recommenders.sampled_softmax as sampled_softmax
from tests.conftest import build_tiny_llama
from tests.trainer.test_lm_loss import TOL, VOCAB, _assert_close, _batch, _grads, _tiny
from trainer.lm_loss import chunked_lm_loss, hidden_states_forward, output_head


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Tiles smaller than the batch's positions, so the position tiling is exercised too."""
    monkeypatch.setattr(sampled_softmax, "POSITION_CHUNK", 5)

# ---- no hooks left on the model ----------------------------------------------------------------------------------
def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _hooked(model: torch.nn.Module) -> list[str]:
    """Modules carrying transformers 5's output-capturing hooks (closures over a ContextVar: they do not pickle)."""
    return [name for name, m in model.named_modules() if getattr(m, "_output_capturing_hooks_installed", False)]


def _trainable(case: str) -> torch.nn.Module:
    """A tiny model in training mode without dropout (so two forwards agree): the arch, ``lora`` (peft LoRA with
    trainable token rows, moved off their start), ``+ckpt`` with gradient checkpointing."""
    arch, _, ckpt = case.partition("+")
    if arch == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(build_tiny_llama(VOCAB), LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
            trainable_token_indices={"embed_tokens": list(range(30, VOCAB))}))
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
    elif arch == "gpt2":
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                           bos_token_id=1, eos_token_id=1, resid_pdrop=0.0, embd_pdrop=0.0,
                                           attn_pdrop=0.0))
    else:
        model = _tiny(arch)
    if ckpt:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def _chunked(model, input_ids: torch.Tensor, labels: torch.Tensor, hidden: torch.Tensor | None = None):
    if hidden is None:
        _, hidden = hidden_states_forward(model, {"input_ids": input_ids})
    head = output_head(model)
    return chunked_lm_loss(hidden, head.weight, labels, head.bias, chunk=7)


@pytest.mark.parametrize("case", ["llama", "phi", "gpt2", "lora", "llama+ckpt", "lora+ckpt"])
def test_a_chunked_training_step_adds_no_hooks_and_the_model_still_pickles(case):
    model = _trainable(case)
    own_model, previous = copy.deepcopy(model), copy.deepcopy(model)  # the full loss, the output_hidden_states path
    input_ids, labels = _batch()
    labels[0, 5:] = torch.arange(30, 36)  # targets among the trained token rows
    hooks = _hooks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = _chunked(model, input_ids, labels)
    grads = _grads(loss, params)
    assert any(g.abs().sum() > 0 for g in grads)
    own = own_model(input_ids=input_ids, labels=labels, use_cache=False).loss
    nothing = torch.zeros(0, dtype=torch.long)
    old_hidden = previous(input_ids=input_ids, use_cache=False, output_hidden_states=True,
                          logits_to_keep=nothing).hidden_states[-1]
    old = _chunked(previous, input_ids, labels, old_hidden)
    for other, other_model in ((own, own_model), (old, previous)):
        assert abs(loss.item() - other.item()) < TOL
        _assert_close(grads, _grads(other, [p for p in other_model.parameters() if p.requires_grad]))
    with torch.no_grad():  # the step
        for p, g in zip(params, grads, strict=True):
            p.sub_(0.1 * g)
    assert _hooked(model) == [] and _hooks(model) == hooks
    if case.endswith("+ckpt"):  # transformers' own input-grads hook (a local function) already bars pickling
        return
    clone = pickle.loads(pickle.dumps(model))
    assert abs(_chunked(clone, input_ids, labels).item() - _chunked(model, input_ids, labels).item()) < TOL
    assert _hooked(model) == [] and _hooks(model) == hooks


def test_the_hook_is_removed_when_the_forward_raises():
    model = build_tiny_llama(VOCAB).train()
    hooks = _hooks(model)
    with pytest.raises(IndexError):  # a token outside the vocabulary: the embedding raises inside the decoder
        hidden_states_forward(model, {"input_ids": torch.full((1, 3), VOCAB + 5)})
    assert _hooks(model) == hooks and _hooked(model) == []
    pickle.dumps(model)


class _Wrapper(torch.nn.Module):
    """Stands for DDP / a DeepSpeed engine: the model under ``.module``, whose forward it runs."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


class _NoDecoderWrapper(_Wrapper):
    """A wrapper that hides the model (``inner`` instead of ``module``): no base decoder to be found."""

    def __init__(self, module: torch.nn.Module) -> None:
        torch.nn.Module.__init__(self)
        self.inner = module

    def forward(self, **kwargs):
        return self.inner(**kwargs)


class _UnusedDecoder(torch.nn.Module):
    """``get_decoder()`` names a module its forward never runs."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.unused = module, torch.nn.Linear(2, 2)

    def get_decoder(self):
        return self.unused

    def forward(self, **kwargs):
        return self.inner(**kwargs)


def test_wrappers_are_unwrapped_to_the_base_decoder():
    model = _trainable("lora")
    input_ids, _ = _batch()
    expected = hidden_states_forward(model, {"input_ids": input_ids})[1]
    got = hidden_states_forward(_Wrapper(_Wrapper(model)), {"input_ids": input_ids})[1]
    assert torch.equal(got, expected) and got.requires_grad


@pytest.mark.parametrize("make", [_NoDecoderWrapper, _UnusedDecoder, lambda m: m.get_decoder()])
def test_a_model_without_a_findable_decoder_is_refused(make):
    model = make(build_tiny_llama(VOCAB))
    hooks = _hooks(model)
    with pytest.raises(ValueError, match="set lm_loss: full"):
        hidden_states_forward(model, {"input_ids": torch.ones(1, 3, dtype=torch.long)})
    assert _hooks(model) == hooks
