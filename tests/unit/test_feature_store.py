"""The services' feature client: its bounded item cache and the Redis address it dials."""
from __future__ import annotations

import pytest

from libs.feature_store import _ItemCache
from libs.feature_store_config import OnlineStore


def test_the_item_cache_holds_at_most_its_size_and_drops_the_oldest_first():
    cache = _ItemCache(ttl=60, size=3)
    for i in range(5):
        cache.put(f"i{i}", {"n": i}, now=0)
    assert len(cache) == 3
    assert cache.get("i0", now=1) is None and cache.get("i1", now=1) is None
    assert cache.get("i4", now=1) == (60, {"n": 4})
    cache.put("i2", {"n": 2}, now=5)  # refreshed: now the newest
    cache.put("i5", {"n": 5}, now=5)
    assert cache.get("i2", now=6) is not None and cache.get("i3", now=6) is None


def test_cached_items_expire_and_a_zero_ttl_or_size_caches_nothing():
    cache = _ItemCache(ttl=10, size=5)
    cache.put("a", None, now=0)  # unknown items are cached too
    assert cache.get("a", now=9) == (10, None) and cache.get("a", now=10) is None
    for off in (_ItemCache(ttl=0, size=5), _ItemCache(ttl=10, size=0)):
        off.put("a", {}, now=0)
        assert len(off) == 0


def test_the_redis_connection_string_gives_the_readers_address():
    store = OnlineStore(type="redis", connection_string="redis.example:6380,db=2,ssl=true,"
                                                          "password=s3=cret")
    store.validate()
    assert store.redis_address() == {"host": "redis.example", "port": 6380, "db": 2,
                                     "ssl": True, "password": "s3=cret"}


@pytest.mark.parametrize("bad", ["redis", "redis:port", "h:1,db=x", "h:1,timeout=3"])
def test_a_bad_redis_connection_string_names_the_field(bad):
    with pytest.raises(ValueError, match="online_store.connection_string"):
        OnlineStore(type="redis", connection_string=bad).validate()
