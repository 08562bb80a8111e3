"""The per-key rate limit with the real Redis under more concurrency than a connection pool
holds: it must not fail open (it once did past ~100 requests in flight, its redis-py pool
exhausted)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis

from gateway.auth import key_cache
from workspaces import services

pytestmark = pytest.mark.redis
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_150_concurrent_requests_against_a_key_limit_of_50_admit_50(gw, settings):
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:rl:*"):  # key ids restart with the database
        client.delete(key)
    client.close()
    services.api_key_update(api_key=gw.api_key, rate_limit_rpm=50)
    key_cache.clear()
    if time.time() % 60 > 50:  # fixed one-minute windows: do not straddle a boundary
        time.sleep(60 - time.time() % 60 + 0.1)

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=150, max_keepalive_connections=150)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            answers = await asyncio.gather(
                *(http.post(gw.v1 + "/chat/completions", json=BODY, headers=gw.headers()) for _ in range(150))
            )
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(fire())
    assert statuses.count(200) == 50
    assert statuses.count(429) == 100
