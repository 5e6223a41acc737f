"""Deprecated alias (one release): ``ItemEmbeddings`` and the embeddings folder format moved to
``recdata.item_vectors`` (the data layer, so the knowledge stage can read them too). Import from there or from
``tokenization.embeddings``."""

from __future__ import annotations

import warnings

from recdata.item_vectors import (
              IDS_FILE,
              META_FILE,
              VECTORS_FILE,
              ItemEmbeddings,
              load_embeddings_dir,
              overflowing_rows,
)

__all__ = ["IDS_FILE", "META_FILE", "VECTORS_FILE", "ItemEmbeddings", "load_embeddings_dir", "overflowing_rows"]

warnings.warn("tokenization.embeddings.vectors moved to recdata.item_vectors; import from there (or from "
              "tokenization.embeddings)", DeprecationWarning, stacklevel=2)
