"""Item text rendering, frozen-LLM mean pooling and the LLM input-embedding alignment targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenization.embeddings import (
    DEFAULT_TEMPLATE,
    llm_text_targets,
    mean_pool_hidden,
    render_catalogue,
    render_item_text,
)
from tokenization.embeddings.text import load_input_embeddings

ITEM = {"item_id": "i1", "title": "Pipette  tips", "brand": "LabCo", "categories": "Lab > Pipettes",
        "description": "Sterile\ntips"}


@pytest.mark.parametrize(
    ("item", "template", "expected"),
    [
        (ITEM, DEFAULT_TEMPLATE,
         "Title: Pipette tips\nBrand: LabCo\nCategories: Lab > Pipettes\nDescription: Sterile tips"),
        ({**ITEM, "brand": "", "description": ""}, DEFAULT_TEMPLATE, "Title: Pipette tips\nCategories: Lab > Pipettes"),
        (ITEM, "{title} by {brand} ({item_id})", "Pipette tips by LabCo (i1)"),
        ({**ITEM, "brand": ""}, "{title} by {brand}", "Pipette tips by"),
        (ITEM, "Item: {{{title}}}", "Item: {Pipette tips}"),
    ],
)
def test_render_item_text_exact(item, template, expected):
    assert render_item_text(item, template) == expected


@pytest.mark.parametrize("template", ["{titel}", "{title} {}", "{title"])
def test_render_rejects_bad_template(template):
    with pytest.raises(ValueError, match="template"):
        render_item_text(ITEM, template)


def test_render_catalogue_names_empty_item():
    items = {"a": ITEM, "b": {"item_id": "b", "title": "", "brand": "", "categories": "", "description": ""}}
    assert render_catalogue(items, ["a"], "{title}") == ["Pipette tips"]
    with pytest.raises(ValueError, match="item 'b' renders to an empty text"):
        render_catalogue(items, ["a", "b"], "Title: {title}")


def _manual_mean(model, tokenizer, text: str) -> np.ndarray:
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[0]  # [seq, hidden]
    return hidden.mean(0).numpy()


def test_mean_pool_padded_batch_equals_per_item(tiny_llama, tiny_hf_tokenizer):
    texts = ["Lab pipette tips", "nitrile gloves and safety glasses for the lab, box of 100", "beaker"]
    lengths = [len(tiny_hf_tokenizer(t)["input_ids"]) for t in texts]
    assert len(set(lengths)) == 3  # the batch really is padded
    batched = mean_pool_hidden(tiny_llama, tiny_hf_tokenizer, texts, batch_size=3)
    single = np.stack([mean_pool_hidden(tiny_llama, tiny_hf_tokenizer, [t], batch_size=1)[0] for t in texts])
    manual = np.stack([_manual_mean(tiny_llama, tiny_hf_tokenizer, t) for t in texts])
    assert batched.shape == (3, 64) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(batched, manual, atol=1e-5)


def test_mean_pool_left_padding_tokenizer_gives_same_result(tiny_llama, tiny_hf_tokenizer):
    texts = ["Lab pipette tips", "beaker set"]
    expected = mean_pool_hidden(tiny_llama, tiny_hf_tokenizer, texts)
    tiny_hf_tokenizer.padding_side = "left"
    np.testing.assert_allclose(mean_pool_hidden(tiny_llama, tiny_hf_tokenizer, texts), expected, atol=1e-5)
    assert tiny_hf_tokenizer.padding_side == "left"  # the caller's tokenizer is not mutated


def test_llm_text_targets_mean_of_input_rows(tiny_model_dir, tiny_chat_tokenizer, tmp_path):
    texts = ["Lab pipette tips", "Toy Story (1995)"]
    out = llm_text_targets(tiny_model_dir, texts, batch_size=1, cache_dir=tmp_path / "cache")
    from transformers import AutoModelForCausalLM

    table = AutoModelForCausalLM.from_pretrained(tiny_model_dir).get_input_embeddings().weight.detach()
    for row, text in enumerate(texts):
        ids = tiny_chat_tokenizer(text, add_special_tokens=False)["input_ids"]
        np.testing.assert_allclose(out[row], table[ids].mean(0).numpy(), atol=1e-6)
    torch.testing.assert_close(load_input_embeddings(tiny_model_dir), table)


def test_llm_text_targets_cached_and_keyed_by_texts(tiny_model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = llm_text_targets(tiny_model_dir, ["beaker set"], cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    import tokenization.embeddings.text as text_mod

    def boom(_):
        raise AssertionError("cache hit expected: the embedding matrix must not be read again")

    monkeypatch.setattr(text_mod, "load_input_embeddings", boom)
    np.testing.assert_array_equal(llm_text_targets(tiny_model_dir, ["beaker set"], cache_dir=cache), first)
    with pytest.raises(AssertionError, match="cache hit expected"):
        llm_text_targets(tiny_model_dir, ["test tubes"], cache_dir=cache)


def test_llm_text_targets_rejects_empty_text(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="text 1 .* has no tokens"):
        llm_text_targets(tiny_model_dir, ["beaker", ""], cache_dir=tmp_path, use_cache=False)
