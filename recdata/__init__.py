"""Shared data layer: the dataset type, splits, loaders, config parsing and atomic IO."""

from recdata.config import config_to_dict, parse_config
from recdata.dataset import ITEM_TEXT_FIELDS, RecDataset
from recdata.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    sha256_json,
)
from recdata.loaders import detect_format, load_dataset
from recdata.prepare import DataConfig, load_and_process, prepare_dataset
from recdata.split import SplitDataset, leave_one_out_split, temporal_split

__all__ = [
    "DataConfig",
    "detect_format",
    "load_and_process",
    "load_dataset",
    "prepare_dataset",
    "ITEM_TEXT_FIELDS",
    "RecDataset",
    "SplitDataset",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "config_to_dict",
    "leave_one_out_split",
    "parse_config",
    "sha256_file",
    "sha256_json",
    "temporal_split",
]
