"""Drill 3: the Celery worker (``celery -A config worker -B``) is SIGKILLed in the middle of
writing a batch. The batch's transaction dies with it; the stream entries stay pending and the
restarted worker reclaims them (XAUTOCLAIM). Every request ends with exactly one log, and the
rollups count each log once.

"Mid-batch" is made certain, not left to timing: the test holds a lock on the rollup tables, so
the worker's batch transaction (logs inserted, rollups next) waits on it; the worker is killed
while pg_stat_activity shows its backend waiting."""

from __future__ import annotations

import asyncio

import orjson
import psycopg
import pytest

from bench import stack
from tests.reliability.drill import Client, read_logs, steady, summary, verify, wait_for_logs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.redis]

ROLLUP_TABLES = "analytics_metadatarollup, analytics_dimensionrollup"


def rollup_totals(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {
            "logs": conn.execute("SELECT count(*) FROM analytics_requestlog").fetchone()[0],
            "metadata request_id": conn.execute(
                "SELECT coalesce(sum(requests), 0) FROM analytics_metadatarollup WHERE key = 'request_id'"
            ).fetchone()[0],
            "metadata drill": conn.execute(
                "SELECT coalesce(sum(requests), 0) FROM analytics_metadatarollup WHERE key = 'drill'"
            ).fetchone()[0],
            "dimension": conn.execute("SELECT coalesce(sum(requests), 0) FROM analytics_dimensionrollup").fetchone()[0],
        }


def test_celery_worker_killed_mid_batch(drill_stack, report):
    s = drill_stack
    s.database()
    redis = s.redis()
    env = s.env(redis.url)
    worker = s.celery(env)
    gateway = s.gateway(env)

    async def load(count: int, rate: float = 30):
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            return await steady(lambda i: client.chat(stream=i % 3 == 0), count=count, rate=rate)

    async def burst(count: int):
        # At once, so the gateway hands most of them to Redis as one batch (one stream entry).
        async with Client(gateway.url, s.api_key, drill=s.name) as client:
            return await asyncio.gather(*(client.chat() for _ in range(count)))

    # 1. The worker writes logs.
    before = asyncio.run(load(45))
    wait_for_logs(s.database_url, s.name, before, timeout=30, idle=s.pipeline_idle)

    # 2. A batch is caught mid-write, and the worker is killed there.
    with psycopg.connect(s.database_url) as lock:
        lock.execute(f"LOCK TABLE {ROLLUP_TABLES} IN SHARE ROW EXCLUSIVE MODE")
        during = asyncio.run(burst(30))

        def worker_waits() -> bool:
            with psycopg.connect(s.database_url, autocommit=True) as conn:
                return bool(
                    conn.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    ).fetchone()
                )

        stack.wait_for(worker_waits, "the worker's batch waiting on the rollup lock", timeout=20)
        with redis.client() as client:
            pending = client.xpending_range(s.stream_key, "portico-writers", "-", "+", 100)
            records = sum(
                len(orjson.loads(client.xrange(s.stream_key, entry["message_id"], entry["message_id"])[0][1][b"batch"]))
                for entry in pending
            )
        worker.kill()
        lock.rollback()
    assert pending, "no stream entry was delivered and unacknowledged when the worker died"
    landed = read_logs(s.database_url, s.name)
    assert not any(call.request_id in landed for call in during), "the killed batch was committed"

    # 3. A new worker reclaims the batch; load goes on meanwhile.
    s.celery(env, name="celery-restarted")
    after_restart = asyncio.run(load(30))
    calls = before + during + after_restart
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=45, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    totals = rollup_totals(s.database_url)
    rollups = f"rollups = logs = {totals['logs']}" if len(set(totals.values())) == 1 else f"rollups {totals}"
    note = f"killed mid-batch: {len(pending)} entries / {records} records uncommitted; {rollups}"
    report("3 celery worker SIGKILL mid-batch + restart", verdict, note)
    assert verdict.ok, summary(verdict.problems)
    assert len(set(totals.values())) == 1, f"rollups disagree with the log count: {totals}"
