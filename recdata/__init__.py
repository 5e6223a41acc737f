"""Shared data layer: the dataset type, splits, loaders, config parsing and atomic IO.

Names are imported lazily (PEP 562) so ``alignrec --help`` does not pay for importing datasets / torch.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "DataConfig": "recdata.prepare",
    "detect_format": "recdata.loaders",
    "load_and_process": "recdata.prepare",
    "load_dataset": "recdata.loaders",
    "prepare_dataset": "recdata.prepare",
    "ITEM_TEXT_FIELDS": "recdata.dataset",
    "RecDataset": "recdata.dataset",
    "SplitDataset": "recdata.split",
    "atomic_path": "recdata.io",
    "atomic_write_bytes": "recdata.io",
    "atomic_write_json": "recdata.io",
    "atomic_write_text": "recdata.io",
    "config_to_dict": "recdata.config",
    "leave_one_out_split": "recdata.split",
    "parse_config": "recdata.config",
    "sha256_file": "recdata.io",
    "sha256_json": "recdata.io",
    "temporal_split": "recdata.split",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
