"""Offline top-K cache: sharded resumable build (Parquet), versioned SQLite or Redis publish, one reader."""

from inference.cache.backends import CacheStore, SQLiteStore, StoreVersion, VersionGoneError, open_store
from inference.cache.build import BuildResult, CacheMismatchError, RecommendFn, build_cache, finalize_cache
from inference.cache.reader import CacheReader, CacheResult, ReaderStats
from inference.cache.shards import iter_cache, read_manifest, verify_cache
from inference.cache.store import current_version_path, publish_cache

__all__ = [
    "BuildResult",
    "CacheMismatchError",
    "CacheReader",
    "CacheResult",
    "CacheStore",
    "ReaderStats",
    "RecommendFn",
    "SQLiteStore",
    "StoreVersion",
    "VersionGoneError",
    "build_cache",
    "current_version_path",
    "finalize_cache",
    "iter_cache",
    "open_store",
    "publish_cache",
    "read_manifest",
    "verify_cache",
]
