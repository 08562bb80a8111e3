"""Drill 7: the gateway (uvicorn) gets SIGTERM under load. Requests in flight finish, new
connections are refused, and the log records still buffered in memory are flushed before the
process exits: every answered request has exactly one log, refused ones none."""

from __future__ import annotations

import asyncio
import signal
import time

import psycopg
import pytest

from tests.reliability.drill import Client, after, steady, summary, verify, wait_for_logs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.redis]


def test_gateway_sigterm_during_load(drill_stack, report):
    s = drill_stack
    s.database()
    redis = s.redis()
    # Nothing is flushed before shutdown: a minute between flushes, batches larger than the load.
    env = s.env(redis.url, LOG_FLUSH_INTERVAL_MS=60_000, LOG_BATCH_SIZE=100_000)
    s.consumer(env)
    gateway = s.gateway(env)
    long_stream = {"x-mock-chunks": "15", "x-mock-chunk-delay-ms": "100"}  # ~1.5 s
    before_sigterm = {}

    def sigterm():
        with redis.client() as client, psycopg.connect(s.database_url, autocommit=True) as conn:
            before_sigterm["stream"] = client.xlen(s.stream_key)
            before_sigterm["logs"] = conn.execute("SELECT count(*) FROM analytics_requestlog").fetchone()[0]
        before_sigterm["at"] = time.monotonic()
        gateway.process.signal(signal.SIGTERM)

    async def drive():
        # A new connection per request: a request either reaches the gateway or is refused.
        async with Client(gateway.url, s.api_key, drill=s.name, force_close=True) as client:

            def call(i: int):
                if i % 2:
                    return client.chat(stream=True, headers=long_stream, chunks=15)
                return client.chat()

            calls, _ = await asyncio.gather(steady(call, count=100, rate=40), after(1.5, sigterm))
            return calls

    calls = asyncio.run(drive())
    exit_code = gateway.process.wait(30)
    logs = wait_for_logs(s.database_url, s.name, calls, timeout=20, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    answered = [call for call in calls if call.answered]
    in_flight = [c for c in answered if c.sent_at < before_sigterm["at"] < c.sent_at + c.latency]
    refused = [call for call in calls if not call.answered]
    note = (
        f"exit {exit_code}; {len(in_flight)} in flight at SIGTERM finished; "
        f"{sum(map(len, logs.values()))} buffered logs flushed (stream {before_sigterm['stream']}, "
        f"db {before_sigterm['logs']} before); {len(refused)} refused after"
    )
    report("7 gateway SIGTERM during load", verdict, note)
    assert verdict.ok, summary(verdict.problems)
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    assert exit_code in (0, -signal.SIGTERM), gateway.process.tail()
    assert "Traceback" not in gateway.process.tail(500), gateway.process.tail()
    assert before_sigterm["stream"] == 0 and before_sigterm["logs"] == 0, "logs were not held in the buffer"
    assert in_flight, "no request was in flight at SIGTERM"
    assert refused, "the load did not outlast the shutdown"
