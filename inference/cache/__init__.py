"""Offline top-K cache: sharded resumable build (Parquet), versioned SQLite or Redis publish, one reader.

Names are imported lazily (PEP 562) so ``alignrec --help`` does not import pyarrow / torch.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "BuildResult": "inference.cache.build",
    "CacheStore": "inference.cache.backends",
    "SQLiteStore": "inference.cache.backends",
    "StoreVersion": "inference.cache.backends",
    "VersionGoneError": "inference.cache.backends",
    "open_store": "inference.cache.reader",
    "CacheMismatchError": "inference.cache.build",
    "CacheReader": "inference.cache.reader",
    "CacheResult": "inference.cache.reader",
    "ReaderStats": "inference.cache.reader",
    "RecommendFn": "inference.cache.build",
    "SCENARIO_MODES": "inference.cache.scenarios",
    "ScenarioError": "inference.cache.reader",
    "expand_scenarios": "inference.cache.scenarios",
    "scenario_key": "inference.cache.scenarios",
    "scenario_users": "inference.cache.scenarios",
    "build_cache": "inference.cache.build",
    "current_version_path": "inference.cache.store",
    "finalize_cache": "inference.cache.build",
    "iter_cache": "inference.cache.shards",
    "publish_cache": "inference.cache.store",
    "read_manifest": "inference.cache.shards",
    "verify_cache": "inference.cache.shards",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
