"""The column-wise Redis publish writes what the per-user one did: each row's bytes in its bucket, the catalogue
and both fallbacks (reference: ``tests.inference.test_publish_rows``)."""

from __future__ import annotations

import json

import pytest

from tests.inference.test_publish_rows import CASES, build, popularity_of, random_recs, reference

pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
from inference.cache.redis_store import MARKER, RedisStore, bucket_of, publish_cache_redis  # noqa: E402


@pytest.mark.parametrize("name", ["float16", "per_scenario", "per_scenario_float32_popularity"])
def test_redis_store_equals_the_per_user_publish(tmp_path, redis_url, name):
    case = CASES[name]
    recs = random_recs(case)
    want = reference(case, recs)
    popularity, scenario_popularity = popularity_of(case)
    url = f"{redis_url}?prefix=bulk-{name}"
    version = publish_cache_redis(build(tmp_path, case, recs), url, popularity=popularity, progress=False,
                                  scenario_popularity=scenario_popularity, score_dtype=case.score_dtype)
    store = RedisStore(url)
    keys = store.version_keys(version)
    stored = {}
    for b, bucket in enumerate(keys.buckets):
        fields = {k.decode(): v for k, v in store.client.hgetall(bucket).items()}
        assert fields.pop(MARKER).decode() == version
        assert all(bucket_of(user, len(keys.buckets)) == b for user in fields)
        stored.update(fields)
    assert stored == want["rows"]
    assert store.client.lrange(keys.catalogue, 0, -1) == want["catalogue"]
    assert [tuple(x) for x in json.loads(store.client.get(keys.fallback))] == want["fallback"]
    if case.scenarios:
        got = json.loads(store.client.get(keys.scenario_fallback))
        assert {s: [tuple(x) for x in ranked] for s, ranked in got.items()} == want["scenario_fallback"]
    assert json.loads(store.client.get(keys.meta))["row_format"]["score_dtype"] == want["format"].score_dtype
    store.close()
