"""Drills 4-6, on one stack (nothing is killed): a misbehaving upstream (drill 4), clients that
hang up mid-stream (drill 5) and 1,000 concurrent streams on one box (drill 6). Every request
gets the right status and exactly one log with the right status."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import pytest

from bench import stack
from tests.reliability.drill import Client, steady, summary, verify, wait_for_logs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.redis]

UPSTREAM_TIMEOUT_S = 1.5  # GATEWAY_UPSTREAM_TIMEOUT: a hang without x-portkey-request-timeout is a 504


@pytest.fixture(scope="module")
def upstream_stack(module_stack):
    s = module_stack
    s.database()
    redis = s.redis()
    env = s.env(redis.url, GATEWAY_UPSTREAM_TIMEOUT=UPSTREAM_TIMEOUT_S)
    s.consumer(env)
    gateway = s.gateway(env)
    return SimpleNamespace(stack=s, gateway=gateway, redis=redis)


def mock_settled(mock) -> dict[str, int]:
    """Wait until the mock holds no stream and no hanging request (the gateway let go of them)."""
    stats = {}

    def settled() -> bool:
        stats.update(mock.stats())
        return stats["open_streams"] == 0 and stats["hanging"] == 0

    stack.wait_for(settled, "upstream connections released", timeout=10)
    return stats


# (name, chat() keyword arguments): the status the client must get, and its log's status.
FAULTS = [
    ("ok", {}),
    ("ok stream", {"stream": True}),
    ("refused", {"provider": "@dead", "expect": 502}),
    ("refused stream", {"provider": "@dead", "stream": True, "expect": 502}),
    ("hang, request timeout", {"headers": {"x-mock-hang": "1", "x-portkey-request-timeout": "300"}, "expect": 408}),
    (
        "hang stream, request timeout",
        {"stream": True, "headers": {"x-mock-hang": "1", "x-portkey-request-timeout": "300"}, "expect": 408},
    ),
    ("hang, upstream timeout", {"headers": {"x-mock-hang": "1"}, "expect": 504}),
    ("slow", {"headers": {"x-mock-latency-ms": "400"}}),
    ("slow stream", {"stream": True, "headers": {"x-mock-latency-ms": "200", "x-mock-chunk-delay-ms": "60"}}),
    (
        "slower than request timeout",
        {"headers": {"x-mock-latency-ms": "800", "x-portkey-request-timeout": "300"}, "expect": 408},
    ),
    (
        "reset mid-stream",
        {"stream": True, "headers": {"x-mock-reset-after": "3"}, "expect_done": False, "log_status": 502},
    ),
    ("429", {"headers": {"x-mock-status": "429"}, "expect": 429}),
    ("500", {"headers": {"x-mock-status": "500"}, "expect": 500}),
    ("500 stream", {"stream": True, "headers": {"x-mock-status": "500"}, "expect": 500}),
]


def test_upstream_faults(upstream_stack, report):
    s, gateway = upstream_stack.stack, upstream_stack.gateway
    name = "drill4-upstream"
    plan = list(itertools.islice(itertools.cycle(FAULTS), 6 * len(FAULTS)))

    async def drive():
        async with Client(gateway.url, s.api_key, drill=name) as client:
            return await steady(lambda i: client.chat(**plan[i][1]), count=len(plan), rate=30)

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, name, calls, timeout=20, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    wrong = [f"{plan[i][0]}: {call.error}" for i, call in enumerate(calls) if not call.correct]
    slow = [call.latency for (kind, _), call in zip(plan, calls, strict=True) if kind == "slow"]
    stats = mock_settled(s.mock)
    report("4 upstream faults (14 kinds x 6)", verdict, f"mock after: {stats}")
    assert not wrong, summary(wrong)
    assert verdict.ok, summary(verdict.problems)
    assert min(slow) >= 0.4


def test_stream_whose_chunked_end_comes_late(upstream_stack, report):
    """The client has the whole stream ([DONE] relayed, response finished) while the gateway
    still drains the upstream's end of body: that is a success, not a client disconnect (499)."""
    s, gateway = upstream_stack.stack, upstream_stack.gateway
    name = "drill4b-late-terminator"

    async def drive():
        async with Client(gateway.url, s.api_key, drill=name) as client:
            return await asyncio.gather(*(client.chat(stream=True, provider="@late", chunks=1) for _ in range(5)))

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, name, calls, timeout=20, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    report("4b complete stream, upstream body ends 0.3 s late", verdict, "")
    assert verdict.ok, summary(verdict.problems)


def test_client_disconnects_mid_stream(upstream_stack, report):
    s, gateway = upstream_stack.stack, upstream_stack.gateway
    name = "drill5-disconnect"
    slow_stream = {"x-mock-chunks": "40", "x-mock-chunk-delay-ms": "50"}

    async def drive():
        async with Client(gateway.url, s.api_key, drill=name) as client:
            hang_ups = [client.chat(stream=True, headers=slow_stream, disconnect_after=3) for _ in range(12)]
            complete = [client.chat(stream=True, headers=slow_stream, chunks=40) for _ in range(4)]
            return await asyncio.gather(*hang_ups, *complete)

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, name, calls, timeout=20, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    stats = mock_settled(s.mock)
    tokens = sorted(logs[call.request_id][0].completion_tokens for call in calls if call.disconnected)
    report("5 client disconnects mid-stream (12 + 4 complete)", verdict, f"499 tokens so far {tokens}; mock {stats}")
    assert verdict.ok, summary(verdict.problems)
    assert all(call.disconnected for call in calls[:12])
    # Tokens so far: at least what the client saw, fewer than the whole reply.
    assert all(3 <= count < 40 for count in tokens), tokens
    assert all(logs[call.request_id][0].completion_tokens == 40 for call in calls[12:])


def test_thousand_concurrent_streams(upstream_stack, report):
    s, gateway = upstream_stack.stack, upstream_stack.gateway
    name = "drill6-concurrency"
    headers = {"x-mock-chunks": "10", "x-mock-chunk-delay-ms": "200"}  # each stream lasts ~2 s
    samples = {"rss": [], "open": []}

    async def drive():
        async with Client(gateway.url, s.api_key, drill=name + "-warmup", timeout=90) as client:
            await asyncio.gather(*(client.chat(stream=True) for _ in range(50)))
        await asyncio.to_thread(mock_settled, s.mock)
        samples["before"] = gateway.process.rss_kb()
        done = asyncio.Event()

        async def sample():
            while not done.is_set():
                samples["rss"].append(gateway.process.rss_kb())
                samples["open"].append((await asyncio.to_thread(s.mock.stats))["open_streams"])
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        async with Client(gateway.url, s.api_key, drill=name, timeout=90) as client:
            calls = await asyncio.gather(*(client.chat(stream=True, headers=headers, chunks=10) for _ in range(1000)))
        done.set()
        await sampler
        return calls

    calls = asyncio.run(drive())
    logs = wait_for_logs(s.database_url, name, calls, timeout=30, idle=s.pipeline_idle)
    verdict = verify(calls, logs)
    mock_settled(s.mock)
    before, peak, after = samples["before"], max(samples["rss"]), gateway.process.rss_kb()
    note = (
        f"gateway RSS {before // 1024} MiB before, {peak // 1024} peak, {after // 1024} after; "
        f"peak open upstream streams {max(samples['open'])}"
    )
    report("6 1,000 concurrent streams", verdict, note)
    assert verdict.ok, summary(verdict.problems)
    assert max(samples["open"]) >= 500, f"the streams did not overlap: {note}"
    assert after - before < 96 * 1024, f"gateway memory grew: {note}"
