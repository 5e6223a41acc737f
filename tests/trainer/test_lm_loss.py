"""``lm_loss: chunked``: the causal-LM loss (and the item head) from the last hidden states, without full logits.

Checked against the model's own loss on tiny random models (Llama tied / untied, Phi with its head bias, GPT-2):
values and gradients within 1e-5, in tiles smaller than the batch and the vocabulary; through peft wrappers (LoRA
with trainable token rows, modules_to_save); and in the trainer, step for step against ``full`` with and without
the item head, LoRA and packed rows, evaluation included. A training step leaves no hook on the model, which still
pickles (transformers 5's output-capturing hooks, which ``output_hidden_states`` would install, do not).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PhiConfig, PhiForCausalLM

import alignrec.recommenders.sampled_softmax as sampled_softmax
from tests.conftest import build_tiny_llama
from trainer.item_head import ItemHeadObjective, ItemHeadTargets, item_head_loss, item_head_loss_from_hidden
from trainer.lm_loss import (
    OutputHead,
    check_output_head,
    chunked_lm_loss,
    hidden_states_forward,
    output_head,
    resolve_lm_loss,
)

TOL = 1e-5
VOCAB = 40


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Tiles smaller than the batch's positions, so the position tiling is exercised too."""
    monkeypatch.setattr(sampled_softmax, "POSITION_CHUNK", 5)


def _tiny(arch: str, vocab: int = VOCAB):
    torch.manual_seed(0)
    if arch == "llama":
        return build_tiny_llama(vocab)
    if arch == "llama_untied":
        return build_tiny_llama(vocab, tie_word_embeddings=False)
    if arch == "phi":  # the scratch default; its LM head has a bias
        return PhiForCausalLM(PhiConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=64, pad_token_id=0,
                                        bos_token_id=1, eos_token_id=1))
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=1, eos_token_id=1))


def _batch(vocab: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, vocab, (3, 11), generator=gen)
    labels = input_ids.clone()
    labels[:, :4] = -100  # prompts
    labels[1, 7:] = -100  # padding
    labels[2, 1::2] = -100  # scattered
    return input_ids, labels


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True), strict=True)]


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        assert (x - y).abs().max().item() < TOL


@pytest.mark.parametrize("num_items", [None, 13])
@pytest.mark.parametrize("arch", ["llama", "llama_untied", "phi", "gpt2"])
def test_chunked_loss_equals_the_models_own_loss(arch, num_items):
    model = _tiny(arch).eval()
    input_ids, labels = _batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    # the whole model: the model's own loss vs the chunked loss from its hidden states (every parameter's gradient)
    params = [p for p in model.parameters() if p.requires_grad]
    own = model(input_ids=input_ids, labels=labels, **kwargs).loss
    outputs, hidden = hidden_states_forward(model, {"input_ids": input_ids})
    assert outputs.logits.shape == (3, 0, VOCAB)  # the LM head projected nothing
    head = output_head(model)
    assert (head.bias is not None) == (arch == "phi")
    chunked = chunked_lm_loss(hidden, head.weight, labels, head.bias, num_items, chunk=7)
    assert abs(own.item() - chunked.item()) < TOL
    _assert_close(_grads(own, params), _grads(chunked, params))
    # from fixed hidden states: gradients w.r.t. the states, the head weight and its bias
    states = hidden.detach().requires_grad_(True)
    wrt = [states, head.weight] + ([head.bias] if head.bias is not None else [])
    full = model.loss_function(logits=model.get_output_embeddings()(states), labels=labels, vocab_size=VOCAB, **kwargs)
    chunked = chunked_lm_loss(states, head.weight, labels, head.bias, num_items, chunk=7)
    assert abs(full.item() - chunked.item()) < TOL
    _assert_close(_grads(full, wrt), _grads(chunked, wrt))


def test_a_batch_without_supervised_tokens_gives_a_finite_zero():
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    loss = chunked_lm_loss(hidden, torch.randn(VOCAB, 8), torch.full((2, 5), -100))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum() == 0


# ---- the item head from hidden states ----------------------------------------------------------------------------
# vocab: 0 pad, 1 eos, 2-3 clusters, 4-7 the items' own tokens; items (cluster, own): (2,4) (2,5) (3,6) (3,7)
CODES = np.array([[2, 4], [2, 5], [3, 6], [3, 7]])
LABELS = torch.tensor([[-100, -100, 3, 6, 2, 5, 1], [-100, -100, 3, 7, 1, -100, -100]])  # targets: items 2, 1, 3


class _AllItems:
    """Draws every item once at expected count 1: the sampled loss is then the full one."""

    num_items = 4

    def sample(self, device=None):
        return torch.arange(4, device=device), torch.zeros(4, device=device)


PRIOR = torch.tensor([-1.0, 0.5, 0.0, 2.0])


@pytest.mark.parametrize("objective, exact", [
    (ItemHeadObjective("full"), False),
    (ItemHeadObjective("chunked", chunk=3), False),
    (ItemHeadObjective("chunked", chunk=3, log_prior=PRIOR), False),
    (ItemHeadObjective("sampled", sampler=_AllItems(), log_prior=PRIOR), False),
    (ItemHeadObjective("sampled", sampler=None), True),  # evaluation: exact (chunked), the sampler is not used
])
@pytest.mark.parametrize("with_bias", [False, True])
def test_item_head_from_hidden_equals_the_logits_path(objective, exact, with_bias):
    gen = torch.Generator().manual_seed(0)
    targets = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    hidden = torch.randn(2, 7, 16, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 16, generator=gen, requires_grad=True)
    bias = torch.randn(VOCAB, generator=gen, requires_grad=True) if with_bias else None
    wrt = [hidden, weight] + ([bias] if with_bias else [])
    logits = torch.nn.functional.linear(hidden, weight, bias)  # [B, T, V]
    expected = item_head_loss(logits, LABELS, targets, objective, exact=exact)
    got = item_head_loss_from_hidden(hidden, weight, bias, LABELS, targets, objective, exact=exact)
    assert abs(expected.item() - got.item()) < TOL
    _assert_close(_grads(expected, wrt), _grads(got, wrt))
    assert item_head_loss_from_hidden(hidden, weight, bias, LABELS[:, :3], targets) is None  # no complete item


# ---- peft wrappers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tied, rows", [(True, "trainable_tokens"), (False, "trainable_tokens"),
                                        (False, "modules_to_save")])
def test_output_head_reads_peft_wrappers(tied, rows):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_llama(VOCAB, tie_word_embeddings=tied)
    names = ["embed_tokens"] + ([] if tied else ["lm_head"])
    extra = ({"trainable_token_indices": {n: list(range(30, VOCAB)) for n in names}} if rows == "trainable_tokens"
             else {"modules_to_save": names})
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM", **extra))
    with torch.no_grad():  # move the adapters and the trained rows off their start
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.eval()
    input_ids, labels = _batch()
    labels[0, 5:] = torch.arange(30, 36)  # targets among the trained rows
    params = [p for p in model.parameters() if p.requires_grad]
    own = model(input_ids=input_ids, labels=labels).loss
    _, hidden = hidden_states_forward(model, {"input_ids": input_ids})
    head = output_head(model)
    check_output_head(head, hidden)
    chunked = chunked_lm_loss(hidden, head.weight, labels, head.bias, chunk=7)
    assert abs(own.item() - chunked.item()) < TOL
    own_grads, chunked_grads = _grads(own, params), _grads(chunked, params)
    assert any(g.abs().sum() > 0 for g in chunked_grads)
    _assert_close(own_grads, chunked_grads)


def test_output_head_refuses_heads_it_cannot_read():
    from peft import LoraConfig, get_peft_model

    capped = build_tiny_llama(VOCAB)
    capped.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        output_head(capped)
    lora_head = get_peft_model(build_tiny_llama(VOCAB, tie_word_embeddings=False),
                               LoraConfig(r=4, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM"))
    with pytest.raises(ValueError, match="not a plain Linear"):
        output_head(lora_head)
    model = build_tiny_llama(VOCAB)
    head = output_head(model)
    with pytest.raises(ValueError, match="does not compute"):
        check_output_head(OutputHead(head.module, head.weight + 1.0, None), torch.randn(1, 3, 64))



# ---- the trainer ---------------------------------------------------------------------------------------------------
def test_resolve_and_config():
    from trainer.config import AlignRecTrainArguments

    assert resolve_lm_loss("auto", 99_999) == "full" and resolve_lm_loss("auto", 100_000) == "chunked"
    assert resolve_lm_loss("full", 10**6) == "full" and resolve_lm_loss("chunked", 10) == "chunked"
    with pytest.raises(ValueError, match="lm_loss"):
        AlignRecTrainArguments(lm_loss="sampled")


def _item_tokenizer(item_ids: list[str]):
    """One cluster level + an item-id level, so the item head applies."""
    from tokenization import ItemTokenizer

    codes = np.array([[i // 4, i] for i in range(len(item_ids))], dtype=np.int64)
    return ItemTokenizer.from_codes(item_ids, codes, [2, len(item_ids)])


@pytest.fixture
def build_trainer(tmp_path, tiny_model_dir, tiny_split):
    """``build(lm_loss, finetune_mode, head_weight, packed_rows)``: a fresh model (same init every call), trainer."""
    from trl import SFTConfig

    from sft_tasks import TaskConfig, build_task_datasets
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model
    from trainer.trl_trainer import AlignRecSFTTrainer

    item_tokenizer = _item_tokenizer(tiny_split.dataset.item_ids())

    def build(lm_loss: str, finetune_mode: str = "full", head_weight: float = 0.0, packed_rows: bool = False):
        args = ModelArguments(model_name_or_path=str(tiny_model_dir), finetune_mode=finetune_mode, lora_dropout=0.0,
                              new_rows_init="mean")
        bundle = setup_model(args, item_tokenizer, torch.float32, seed=0)
        cfg = TaskConfig(weights='{"seqrec_full": 1, "seqrec": 1}', prompt_format="codes", max_history=3)
        rows = build_task_datasets(cfg, tiny_split, item_tokenizer, bundle.tokenizer)["train"].select_columns(
            ["prompt", "completion"])
        token_ids = item_tokenizer.item_token_ids(bundle.tokenizer)
        sft = SFTConfig(output_dir=str(tmp_path / lm_loss), max_length=64, per_device_train_batch_size=4,
                        report_to=[], use_cpu=True, bf16=False, completion_only_loss=True, dataloader_num_workers=0,
                        seed=0, data_seed=0, max_steps=3, learning_rate=5e-3, lr_scheduler_type="constant",
                        logging_steps=1, save_strategy="no", packing=packed_rows, per_device_eval_batch_size=4)
        return AlignRecSFTTrainer(
            model=bundle.model, args=sft, train_dataset=rows, eval_dataset=rows.select(range(8)),
            processing_class=bundle.tokenizer, peft_config=bundle.peft_config, lm_loss=lm_loss,
            item_head=ItemHeadTargets.from_token_ids(token_ids, len(bundle.tokenizer)) if head_weight else None,
            item_head_weight=head_weight, packed_rows=packed_rows)

    return build


@pytest.mark.parametrize("finetune_mode, head_weight, packed_rows", [
    ("full", 0.0, False),  # full: trl's fused head
    ("full", 1.0, False),  # full: the model's own logits + the item head on them
    ("lora", 1.0, False),  # peft LoRA with trainable code-token rows (a wrapped output head)
    ("lora", 1.0, True),  # packed rows
])
def test_chunked_training_matches_full_step_for_step(build_trainer, finetune_mode, head_weight, packed_rows):
    runs = {}
    for lm_loss in ("full", "chunked"):
        trainer = build_trainer(lm_loss, finetune_mode, head_weight, packed_rows)
        assert trainer.lm_loss == lm_loss and trainer.lm_loss_record["lm_loss"]["loss"] == lm_loss
        start = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        trainer.train()
        moved = [p for p, p0 in zip((p for p in trainer.model.parameters() if p.requires_grad), start, strict=True)
                 if not torch.equal(p, p0)]
        assert moved  # the step trained something
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        heads = [r["item_head_loss"] for r in trainer.state.log_history if "item_head_loss" in r]
        runs[lm_loss] = (losses, heads, trainer.evaluate()["eval_loss"])
    (full_losses, full_heads, full_eval), (losses, heads, eval_loss) = runs["full"], runs["chunked"]
    assert len(losses) == 3 and len(heads) == (3 if head_weight else 0)
    assert np.allclose(losses, full_losses, rtol=0, atol=TOL) and np.allclose(heads, full_heads, rtol=0, atol=TOL)
    assert abs(eval_loss - full_eval) < TOL


def test_auto_picks_chunked_above_the_threshold(build_trainer, monkeypatch):
    import trainer.lm_loss as lm_loss

    small = build_trainer("auto")
    vocab = small.lm_loss_record["lm_loss"]["vocab_size"]
    assert small.lm_loss == "full" and vocab < lm_loss.AUTO_CHUNKED_MIN_VOCAB
    monkeypatch.setattr(lm_loss, "AUTO_CHUNKED_MIN_VOCAB", vocab)
    trainer = build_trainer("auto")
    assert trainer.lm_loss == "chunked" and trainer.lm_loss_record == {"lm_loss": {"loss": "chunked",
                                                                                   "vocab_size": vocab}}


def test_entry_point_records_the_chunked_loss(monkeypatch, base_argv, tmp_path):
    """``--lm_loss chunked`` through trainer/sft.py: LoRA trains, the held-out loss comes from the same path, and
    the run manifest states the loss."""
    import json

    from tests.trainer.conftest import logged, run_entry

    run_entry(monkeypatch, [*base_argv, "--max_steps", "3", "--lm_loss", "chunked", "--eval_strategy", "steps",
                            "--eval_steps", "3"])
    run = tmp_path / "run"
    manifest = json.loads((run / "alignrec_train.json").read_text())
    assert manifest["lm_loss"]["loss"] == "chunked" and manifest["lm_loss"]["vocab_size"] > 0
    assert all(np.isfinite(v) for v in logged(run, "loss").values()) and len(logged(run, "loss")) == 3
    assert np.isfinite(logged(run, "eval_seqrec_loss")[3])
