"""The embedded defaults installed by `make setup` load offline and work (slow: real models)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


def _require(path):
    if not path.exists():
        pytest.skip(f"{path} missing: run `make setup`")
    return path


def test_converted_smollm2_loads_offline_and_answers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recdata.paths import default_llm_dir

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    path = _require(default_llm_dir())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) > 100e6
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_ml100k_files_installed():
    from recdata.loaders import load_dataset
    from recdata.paths import ml100k_dir

    ds = load_dataset(_require(ml100k_dir()), format="recbole")
    assert (len(ds.sequences), len(ds.items), ds.num_interactions()) == (943, 1682, 100_000)
