"""Loading the HF tokenizer a stage works with, including the built-in ``codes_only`` tokenizer.

``codes_only`` is for TIGER-style models trained from scratch: its normaliser erases all text, so a prompt
tokenises to just the item code tokens it contains (the ItemTokenizer adds them as added tokens, which are
matched before normalisation). The same prompt builders then serve both pretrained LLMs and scratch models,
and a 3-token base vocabulary keeps the output layer tiny.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CODES_ONLY = "codes_only"


def build_codes_only_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(Regex(r"[\s\S]"), "")  # every character of plain text goes away
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   bos_token="<eos>", name_or_path=CODES_ONLY)


def load_hf_tokenizer(spec: str | Path | None) -> Any:
    """``codes_only`` -> the built-in tokenizer; a folder -> ``AutoTokenizer``; empty -> the default LLM's."""
    from transformers import AutoTokenizer

    from recdata.paths import default_llm_dir, require

    if str(spec or "") == CODES_ONLY:
        return build_codes_only_tokenizer()
    path = require(Path(spec) if spec else default_llm_dir(), "HF tokenizer folder")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
