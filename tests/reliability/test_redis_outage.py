"""Drill 1: Redis goes away. The gateway keeps answering and writes log batches to the database
directly while Redis is unreachable; once Redis is back the stream takes over again. Either
way every request ends with exactly one log."""

from __future__ import annotations

import asyncio

import pytest

from bench import stack
from tests.reliability.drill import Client, after, steady, summary, verify, wait_for_logs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.redis]


def test_redis_killed_mid_load_and_restarted(drill_stack, report):
    s = drill_stack
    s.database()
    # Append-only file, fsync'd: a Redis that holds a log stream must not forget what it
    # acknowledged when it restarts (without persistence the unread entries would be gone).
    redis = s.redis(persistent=True)
    env = s.env(redis.url)
    s.consumer(env)
    gateway = s.gateway(env)

    async def drive():
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            warm = await client.chat()
            load = steady(lambda i: client.chat(stream=i % 3 == 0), count=150, rate=30)
            calls, _, _ = await asyncio.gather(load, after(1.5, redis.kill), after(3.5, redis.start))
            return [warm, *calls]

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=30, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    fell_back = "Redis unavailable" in gateway.process.tail(200)
    report("1a redis SIGKILL mid-load + restart", verdict, "fallback to DB seen" if fell_back else "no fallback?")
    assert verdict.ok, summary(verdict.problems)
    assert fell_back, "the gateway never noticed Redis was down:\n" + gateway.process.tail()


def test_redis_never_started(drill_stack, report):
    s = drill_stack
    s.database()
    env = s.env(f"redis://{stack.HOST}:{stack.free_port()}/0")  # nothing listens there
    gateway = s.gateway(env)

    async def drive():
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            return await steady(lambda i: client.chat(stream=i % 3 == 0), count=60, rate=30)

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=20, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    report("1b redis never started", verdict, "direct DB writes")
    assert verdict.ok, summary(verdict.problems)
    assert "Redis unavailable" in gateway.process.tail(200)
