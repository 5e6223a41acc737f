"""Deprecated alias (one release): ``load_user_embeddings`` / ``read_id_list`` moved to ``recdata.item_vectors``
(the data layer, so the knowledge stage can read them too). Import from there or from ``tokenization.embeddings``."""

from __future__ import annotations

import warnings

from recdata.item_vectors import SAFETENSORS_KEYS, load_user_embeddings, read_id_list

__all__ = ["SAFETENSORS_KEYS", "load_user_embeddings", "read_id_list"]

warnings.warn("tokenization.embeddings.user_provided moved to recdata.item_vectors; import from there (or from "
              "tokenization.embeddings)", DeprecationWarning, stacklevel=2)
