"""Shared offline fixtures: a tiny BPE tokenizer, a tiny random Llama, and a hand-made dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Recommend the next item for this user. The user bought these items in order:",
    "What is the title of the item with this code? Which item matches the description?",
    "Answer yes or no. Would the user buy this candidate next? Choose one of the candidates.",
    "Lab pipette tips, nitrile gloves, safety glasses, digital scale, beaker set, test tubes.",
    "Toy Story (1995), Star Wars (1977), Fargo (1996), The Godfather (1972), Heat (1995).",
    "brand categories description title history candidate user item code next",
]


def build_tiny_hf_tokenizer(chat_template: str | None = None):
    """A ~400-token byte-level BPE tokenizer trained in memory (no hub access)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        hf.chat_template = chat_template
    return hf


def build_tiny_llama(vocab_size: int, seed: int = 0, tie_word_embeddings: bool = True):
    """A 2-layer Llama, hidden 64, random weights (fp32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=tie_word_embeddings,
        bos_token_id=0, eos_token_id=0, pad_token_id=3,
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_hf_tokenizer():
    return build_tiny_hf_tokenizer()


@pytest.fixture
def tiny_chat_tokenizer():
    return build_tiny_hf_tokenizer(CHAT_TEMPLATE)


@pytest.fixture
def tiny_llama(tiny_hf_tokenizer):
    return build_tiny_llama(len(tiny_hf_tokenizer))


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_chat_tokenizer) -> Path:
    """A saved tiny Llama + chat tokenizer folder, loadable like a real HF model folder."""
    path = tmp_path / "tiny-llama"
    build_tiny_llama(len(tiny_chat_tokenizer)).save_pretrained(path)
    tiny_chat_tokenizer.save_pretrained(path)
    return path


TINY_ITEMS = [
    {"item_id": "i1", "title": "Pipette tips", "brand": "LabCo", "categories": "Lab > Pipettes", "description": "Sterile tips"},
    {"item_id": "i2", "title": "Nitrile gloves", "brand": "SafeHands", "categories": "Safety > Gloves", "description": "Box of 100"},
    {"item_id": "i3", "title": "Safety glasses", "brand": "SafeHands", "categories": "Safety > Eyewear", "description": ""},
    {"item_id": "i4", "title": "Digital scale", "brand": "WeighIt", "categories": "Lab > Scales", "description": "0.01 g"},
    {"item_id": "i5", "title": "Beaker set", "brand": "LabCo", "categories": "Lab > Glassware", "description": "5 sizes"},
    {"item_id": "i6", "title": "Test tubes", "brand": "LabCo", "categories": "Lab > Glassware", "description": "Pack of 50"},
    {"item_id": "i7", "title": "Lab coat", "brand": "SafeHands", "categories": "Safety > Clothing", "description": "White"},
    {"item_id": "i8", "title": "Magnetic stirrer", "brand": "WeighIt", "categories": "Lab > Mixing", "description": ""},
]

TINY_SEQUENCES = [
    {"user_id": "u1", "item_ids": ["i1", "i2", "i3", "i4", "i5"]},
    {"user_id": "u2", "item_ids": ["i2", "i3", "i6", "i7"]},
    {"user_id": "u3", "item_ids": ["i5", "i6", "i1"]},
    {"user_id": "u4", "item_ids": ["i8", "i4", "i1", "i2", "i6", "i7"]},
    {"user_id": "u5", "item_ids": ["i3", "i8", "i5"]},
]


@pytest.fixture
def tiny_dataset():
    from recdata import RecDataset

    return RecDataset.from_records(TINY_ITEMS, TINY_SEQUENCES, name="tiny").validate()


@pytest.fixture
def tiny_split(tiny_dataset):
    from recdata import leave_one_out_split

    return leave_one_out_split(tiny_dataset, max_history=20)


def shared_dataset_dir(name: str) -> Path:
    """Path of a ../shared dataset folder, or skip the test when ../shared is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (needs ../shared/datasets)")
    return path
