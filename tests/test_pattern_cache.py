"""The live pattern set follows the error_patterns table without a restart."""

from __future__ import annotations

from elk_resolver.store.pattern_cache import PatternCache

MESSAGE = "Connection refused while calling payments port 8443"


async def test_a_disabled_pattern_stops_classifying_and_enabling_it_brings_it_back(pool):
    cache = PatternCache(pool, refresh_s=60)
    await cache.refresh()
    assert cache.current.match(MESSAGE).pattern_name == "Connection Refused"

    await pool.execute("UPDATE error_patterns SET disabled_at = NOW() WHERE id = 3")
    assert await cache.refresh()
    assert cache.current.match(MESSAGE) is None

    await pool.execute("UPDATE error_patterns SET disabled_at = NULL WHERE id = 3")
    assert await cache.refresh()
    assert cache.current.match(MESSAGE).pattern_name == "Connection Refused"
