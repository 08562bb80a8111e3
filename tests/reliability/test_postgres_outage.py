"""Drill 2: PostgreSQL goes away (a private cluster, stopped with ``pg_ctl stop -m fast``).

The gateway keeps proxying from its caches (GATEWAY_AUTH_CACHE_TTL outlasts the outage). With
Redis up the stream holds the batches until the consumer can write them; with Redis down too
the gateway spools them to LOG_SPOOL_DIR and replays the spool once it can deliver again."""

from __future__ import annotations

import asyncio

import pytest

from tests.reliability.drill import Client, after, steady, summary, verify, wait_for_logs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.redis]


def test_postgres_stopped_mid_load_and_restarted(drill_stack, report):
    s = drill_stack
    s.database(private=True)
    redis = s.redis()
    env = s.env(redis.url)
    s.consumer(env)
    gateway = s.gateway(env)
    held = {}

    def stream_length():
        with redis.client() as client:
            held["entries"] = client.xlen(s.stream_key)

    async def drive():
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            warm = await client.chat()
            load = steady(lambda i: client.chat(stream=i % 3 == 0), count=150, rate=30)
            faults = (after(1.5, s.postgres.stop), after(3.9, stream_length), after(4.0, s.postgres.start))
            calls, *_ = await asyncio.gather(load, *faults)
            return [warm, *calls]

    calls = asyncio.run(drive())
    # The consumer reclaims the entries it failed to write once they are idle for 10 s.
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=40, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    report("2a postgres stopped mid-load + restarted", verdict, f"stream held {held.get('entries')} entries")
    assert verdict.ok, summary(verdict.problems)
    assert held.get("entries"), "the stream held nothing while the database was down"


def test_postgres_down_before_prices_are_cached(drill_stack, report):
    """The price table is cached for 60 s, filled on the first request with tokens. When that
    fill (or a refill, after an outage longer than 60 s) meets a dead database, the request is
    still answered and must still be logged, without a cost."""
    s = drill_stack
    s.database(private=True)
    redis = s.redis()
    env = s.env(redis.url)
    s.consumer(env)
    gateway = s.gateway(env)

    async def drive():
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            # An upstream error has no tokens: key and provider are cached, prices are not.
            warm = await client.chat(headers={"x-mock-status": "500"}, expect=500)
            await asyncio.to_thread(s.postgres.stop)
            calls = await asyncio.gather(*(client.chat(stream=i % 2 == 0) for i in range(10)))
            await asyncio.to_thread(s.postgres.start)
            return [warm, *calls]

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=25, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    report("2c postgres down, price cache cold", verdict, "")
    assert verdict.ok, summary(verdict.problems)


def test_postgres_and_redis_down_together(drill_stack, report):
    s = drill_stack
    s.database(private=True)
    redis = s.redis(persistent=True)
    env = s.env(redis.url)
    s.consumer(env)
    gateway = s.gateway(env)
    spooled = {}

    def both_down():
        redis.kill()
        s.postgres.stop()

    def both_up():
        spooled["files"] = sorted(p.name for p in s.spool_dir.glob("*")) if s.spool_dir.exists() else []
        s.postgres.start()
        redis.start()

    async def drive():
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            warm = await client.chat()
            # Past the gateway's 5 s back-off after recovery, so it delivers again (and replays).
            load = steady(lambda i: client.chat(stream=i % 3 == 0), count=240, rate=30)
            calls, *_ = await asyncio.gather(load, after(1.5, both_down), after(4.0, both_up))
            return [warm, *calls]

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=40, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    report("2b postgres + redis down, spool replayed", verdict, f"spool files during outage: {len(spooled['files'])}")
    assert verdict.ok, summary(verdict.problems)
    assert spooled["files"], "nothing was spooled while Redis and the database were down"
    assert not list(s.spool_dir.glob("*")), "the spool was not replayed"
