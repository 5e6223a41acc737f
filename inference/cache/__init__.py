"""Offline top-K cache: sharded resumable build (Parquet), versioned SQLite publish, in-process reader."""

from inference.cache.build import BuildResult, CacheMismatchError, RecommendFn, build_cache, finalize_cache
from inference.cache.reader import CacheReader, CacheResult, ReaderStats
from inference.cache.scenarios import SCENARIO_MODES, expand_scenarios, scenario_key, scenario_users
from inference.cache.shards import iter_cache, read_manifest, verify_cache
from inference.cache.store import current_version_path, publish_cache

__all__ = [
    "BuildResult",
    "CacheMismatchError",
    "CacheReader",
    "CacheResult",
    "ReaderStats",
    "RecommendFn",
    "SCENARIO_MODES",
    "build_cache",
    "current_version_path",
    "expand_scenarios",
    "finalize_cache",
    "iter_cache",
    "publish_cache",
    "read_manifest",
    "scenario_key",
    "scenario_users",
    "verify_cache",
]
