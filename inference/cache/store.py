"""``publish_cache``: compile a finished cache build into a versioned SQLite file and switch to it atomically.

Store layout::

    store_dir/CURRENT                         one line: the file name of the live version
    store_dir/versions/v-<utc time>-<build version>.sqlite

A version is written completely under a temp name, renamed into ``versions/``, and only then is ``CURRENT``
replaced (``os.replace``). Readers open the version ``CURRENT`` names, so they see the old or the new
version, never a mix. Old versions beyond ``keep_versions`` are deleted; a reader still holding one keeps
reading it (POSIX unlink semantics) and moves to the new one on its next lookup.

A per-scenario build (manifest ``scenarios``) has rows keyed ``user + "\x1f" + scenario`` and one more table,
``scenario_fallback`` (one popular-items list per scenario, ``scenario_fallbacks``), which the Redis store
mirrors as one key.

Rows are binary (``inference.cache.rows``): ``recs.items`` holds catalogue indices and float16 scores, the
``catalogue`` table the version's items once (JSON strings in parts), the meta its ``row_format``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.cache.publish_rows import RowEncoder, encoded_chunks
from inference.cache.rows import ROW_FORMAT_KEY, RowFormat, encode_catalogue
from inference.cache.shards import scan_cache, verify_cache
from recdata.errors import InputFileError, UserError
from recdata.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

CURRENT_NAME = "CURRENT"
LOCK_NAME = ".publish.lock"
VERSIONS_DIR = "versions"

SCHEMA = """
CREATE TABLE recs (user_id TEXT PRIMARY KEY, items BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE catalogue (part INTEGER PRIMARY KEY, items BLOB NOT NULL);
CREATE TABLE fallback (rank INTEGER PRIMARY KEY, item_id TEXT NOT NULL, score REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
# per-scenario caches (manifest "scenarios"): recs keys are user + SCENARIO_SEP + scenario, one fallback per scenario
SCENARIO_SCHEMA = """
CREATE TABLE scenario_fallback (scenario TEXT NOT NULL, rank INTEGER NOT NULL, item_id TEXT NOT NULL,
                                score REAL NOT NULL, PRIMARY KEY (scenario, rank)) WITHOUT ROWID;
"""


def publish_cache(
    cache_dir: str | Path,
    store_dir: str | Path,
    popularity: Mapping[str, int] | None = None,
    fallback_k: int | None = None,
    keep_versions: int = 2,
    progress: bool = True,
    scenario_popularity: Mapping[str, Mapping[str, int]] | None = None,
    score_dtype: str = "float16",
) -> Path:
    """Publish ``cache_dir`` (a finished build) as the live version of ``store_dir``; returns the new file.

    Fallback for users missing from the cache: the ``fallback_k`` (default: the cache's k) most popular
    items of ``popularity`` (training interaction counts, the documented choice), or, when not given, the
    items most often recommended in the cache itself. ``keep_versions`` >= 1 counts the live one.
    A per-scenario build also gets one fallback per scenario: ``scenario_popularity[scenario]`` (training
    interactions labelled with it), or the items most often cached for that scenario.
    ``score_dtype``: how rows store scores, ``float16`` (default) or ``float32`` (``inference.cache.rows``).
    """
    if keep_versions < 1:
        raise UserError(f"keep_versions must be >= 1 (the live version), got {keep_versions}")
    manifest = verify_cache(cache_dir)
    fallback_k = fallback_k or manifest["k"]
    store_dir = Path(store_dir)
    versions = store_dir / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    target = versions / f"{version_name(manifest)}.sqlite"

    with atomic_path(target) as tmp:
        frequency = _write_db(tmp, cache_dir, manifest, popularity, fallback_k, progress, scenario_popularity,
                              score_dtype)
    logger.info("compiled %s (%d users, %.1f MB)", target.name, manifest["num_users"], target.stat().st_size / 1e6)
    with open(store_dir / LOCK_NAME, "a") as lock:  # one swap + garbage collection at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        atomic_write_text(store_dir / CURRENT_NAME, target.name + "\n")
        logger.info("published %s as the live cache version of %s (fallback: %s)", target.name, store_dir, frequency)
        _collect_garbage(versions, keep_versions, live=target.name)
    return target


def current_version_path(store_dir: str | Path) -> Path:
    """The live version file that ``CURRENT`` names."""
    store_dir = Path(store_dir)
    pointer = store_dir / CURRENT_NAME
    if not pointer.is_file():
        raise InputFileError(f"{pointer} not found: no cache is published in {store_dir}; run `alignrec cache publish`")
    return store_dir / VERSIONS_DIR / pointer.read_text(encoding="utf-8").strip()


def _write_db(
    path: Path, cache_dir: str | Path, manifest: Mapping[str, Any], popularity: Mapping[str, int] | None,
    fallback_k: int, progress: bool, scenario_popularity: Mapping[str, Mapping[str, int]] | None = None,
    score_dtype: str = "float16",
) -> str:
    path.unlink(missing_ok=True)  # atomic_path made an empty placeholder; SQLite wants a fresh file
    catalogue, largest = scan_cache(cache_dir)
    row_format = RowFormat.choose(len(catalogue), score_dtype, largest)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")  # bulk load into a private file: no journal needed
        con.execute("PRAGMA synchronous=OFF")
        con.executescript(SCHEMA)
        scenario_names = manifest.get("scenarios")
        if scenario_names:
            con.executescript(SCENARIO_SCHEMA)
        # fallbacks without training popularity: the items most often cached (overall, per scenario)
        encoder = RowEncoder(catalogue, row_format, count_items=popularity is None,
                             count_scenarios=bool(scenario_names) and scenario_popularity is None)
        seen = 0
        for users, rows in encoded_chunks(cache_dir, encoder, manifest["num_users"], progress):
            con.executemany("INSERT INTO recs VALUES (?, ?)", zip(users, rows, strict=True))
            seen += len(users)
        if seen != manifest["num_users"]:
            raise RuntimeError(f"cache {cache_dir} yielded {seen} users, its manifest says {manifest['num_users']}")
        counts = encoder.item_counts() if popularity is None else {}
        per_scenario = encoder.scenario_counts() if scenario_names and scenario_popularity is None else {}
        fallback, source = fallback_items(popularity, counts, fallback_k)
        con.executemany("INSERT INTO fallback VALUES (?, ?, ?)",
                        [(r, item, score) for r, (item, score) in enumerate(fallback, start=1)])
        if scenario_names:
            fallbacks = scenario_fallbacks(scenario_names, scenario_popularity, per_scenario, fallback_k)
            con.executemany("INSERT INTO scenario_fallback VALUES (?, ?, ?, ?)", [
                (name, r, item, score) for name, ranked in fallbacks.items()
                for r, (item, score) in enumerate(ranked, start=1)])
        con.executemany("INSERT INTO catalogue VALUES (?, ?)", enumerate(encode_catalogue(catalogue)))
        meta = {**version_meta(manifest, source, cache_dir), ROW_FORMAT_KEY: row_format.to_meta(len(catalogue))}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        con.commit()
        con.execute("PRAGMA journal_mode=WAL")  # persisted in the file: readers never block each other
        con.execute("ANALYZE")
        con.commit()
    finally:
        con.close()
    return source


def fallback_items(popularity: Mapping[str, int] | None, rec_counts: Mapping[str, int],
                   fallback_k: int) -> tuple[list[tuple[str, float]], str]:
    """The documented fallback: ``fallback_k`` most popular training items, else most recommended; ties by id."""
    source = "train_popularity" if popularity is not None else "cache_frequency"
    ranked = sorted((popularity if popularity is not None else rec_counts).items(), key=lambda kv: (-kv[1], kv[0]))
    return [(item, float(c)) for item, c in ranked[:fallback_k]], source


def scenario_fallbacks(scenarios: Sequence[str], scenario_popularity: Mapping[str, Mapping[str, int]] | None,
                       cached_counts: Mapping[str, Mapping[str, int]], fallback_k: int) -> dict[str, list[tuple[str, float]]]:
    """One fallback per scenario of a per-scenario build: its ``fallback_k`` most popular training items
    (``scenario_popularity[scenario]``), else the items most often cached for it (``cached_counts``); ties by id."""
    tables = scenario_popularity if scenario_popularity is not None else cached_counts
    return {name: fallback_items(tables.get(name, {}), {}, fallback_k)[0] for name in scenarios}


def version_meta(manifest: Mapping[str, Any], fallback_source: str, cache_dir: str | Path) -> dict[str, Any]:
    """What every published version records about its build (the same keys in every store)."""
    meta = {key: manifest[key] for key in ("version", "k", "model", "adapter", "item_tokenizer_hash",
                                            "created_at", "num_users", "num_rows", "base_version")}
    meta["scenarios"] = manifest.get("scenarios") or None  # per-scenario builds: keys are user + "\x1f" + scenario
    meta.update(fallback_source=fallback_source,  # a URI (file://, s3://) is kept as given
                cache_dir=str(cache_dir) if "://" in str(cache_dir) else str(Path(cache_dir).resolve()))
    return meta


def version_name(manifest: Mapping[str, Any]) -> str:
    """Unique per publish: ``v-<utc publish time>-<build version>`` (sorts by publish time)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"v-{stamp}-{manifest['version']}"


def _collect_garbage(versions: Path, keep: int, live: str) -> None:
    files = sorted(versions.glob("v-*.sqlite"))
    for old in files[:-keep] if keep < len(files) else []:
        if old.name == live:
            continue
        for suffix in ("", "-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)
        logger.info("deleted old cache version %s", old.name)
    for tmp in versions.glob(".v-*.tmp"):  # a publish killed mid-way; anything older than 1 h is abandoned
        if tmp.stat().st_mtime < dt.datetime.now().timestamp() - 3600:
            tmp.unlink(missing_ok=True)
