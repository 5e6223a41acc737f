"""Loading the HF tokenizer a stage works with, including the built-in ``codes_only`` tokenizer.

``codes_only`` is for TIGER-style models trained from scratch: its normaliser erases all text, so a prompt
tokenises to just the item code tokens it contains (the ItemTokenizer adds them as added tokens, which are
matched before normalisation). The same prompt builders then serve both pretrained LLMs and scratch models,
and a 3-token base vocabulary keeps the output layer tiny. Moved from ``recdata.hf_tokenizer`` (kept one release
as a deprecated alias).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recdata.errors import InputFileError

__all__ = ["CODES_ONLY", "build_codes_only_tokenizer", "load_hf_tokenizer"]

CODES_ONLY = "codes_only"


def build_codes_only_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(Regex(r"[\s\S]"), "")  # every character of plain text goes away
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   bos_token="<eos>", name_or_path=CODES_ONLY)


def load_hf_tokenizer(spec: str | Path | None, flag: str = "--hf_tokenizer_dir") -> Any:
    """``codes_only`` -> the built-in tokenizer; a folder -> ``AutoTokenizer``; empty -> the default LLM's.
    A missing or unloadable folder is an ``InputFileError`` naming ``flag`` and the value."""
    from transformers import AutoTokenizer

    from recdata.paths import default_llm_dir, require

    if str(spec or "") == CODES_ONLY:
        return build_codes_only_tokenizer()
    if not spec:
        path = require(default_llm_dir(), "HF tokenizer folder")  # the default LLM: `make setup` installs it
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    path = Path(spec)
    if not path.is_dir():
        raise InputFileError(f"{flag} {spec}: no such folder; pass a local Hugging Face model or tokenizer "
                             f"folder (one holding tokenizer.json or tokenizer_config.json), or {CODES_ONLY!r} for the "
                             "code tokens only")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:  # transformers' "can't load tokenizer" / "unrecognized model" family
        raise InputFileError(f"{flag} {spec} holds no loadable tokenizer ({' '.join(str(exc).split())[:200]}"
                             f"); pass a Hugging Face model or tokenizer folder, or {CODES_ONLY!r}") from exc
