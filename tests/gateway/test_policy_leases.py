"""Per-process leases (gateway/policy_leases.py) with the real Redis: two enforcers stand for two
gateway processes sharing the counters. The total admitted never exceeds a limit, unused leases
go back on close, settlements reach Redis batched, and a lowered limit is not served from a
lease taken under the old one."""

from __future__ import annotations

import asyncio
import socket
import time
from decimal import Decimal

import pytest
import redis
from asgiref.sync import sync_to_async
from django.db import connections

from analytics.policies import services as policy_services
from gateway.policies import PolicyEnforcer, policy_cache
from gateway.policy_leases import FLUSH_SECONDS
from workspaces.errors import GatewayError

pytestmark = pytest.mark.redis


@pytest.fixture
def counters(transactional_db, settings):
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:pol:*"):  # ids restart with the database
        client.delete(key)
    policy_cache.clear()
    yield client
    policy_cache.clear()
    client.close()
    asyncio.run(sync_to_async(connections.close_all)())  # the policy cache loaders' thread


def _total(client: redis.Redis, prefix: str) -> float:
    keys = list(client.scan_iter(f"{prefix}:pol:*"))
    return sum(float(client.get(key) or 0) for key in keys)


def _not_at_hour_end() -> None:
    if time.time() % 3600 > 3590:
        time.sleep(3600 - time.time() % 3600 + 0.1)


async def _ask(enforcer: PolicyEnforcer, workspace, *, user: str = "ann", max_tokens: int = 10):
    try:
        return await enforcer.check(
            workspace_id=workspace.pk,
            metadata={"_user": user},
            model="gpt-4o-mini",
            provider="openai",
            key_id=None,
            doc={"max_tokens": max_tokens},
            body_size=100,
        )
    except GatewayError as exc:
        return exc


def test_two_processes_sharing_a_limit_never_admit_more_than_it(counters, workspace, settings):
    policy_services.policy_create(workspace=workspace, name="shared", kind="requests", limit=100, window="hour")
    _not_at_hour_end()
    first, second = PolicyEnforcer(settings.REDIS_URL), PolicyEnforcer(settings.REDIS_URL)

    async def drill() -> list:
        answers = []
        for _round in range(3):  # bursts, so both hold leases when the quota runs out
            answers += await asyncio.gather(*(_ask(first if i % 2 else second, workspace) for i in range(80)))
        await first.close()
        await second.close()
        return answers

    answers = asyncio.run(drill())
    refused = [a for a in answers if isinstance(a, GatewayError)]
    admitted = len(answers) - len(refused)
    assert admitted <= 100
    assert admitted >= 90  # little quota stranded: leases shrink as the limit nears
    assert all(a.status == 429 and "'shared'" in a.message for a in refused)
    # Both closed: what they held and did not use went back, so Redis counts the admitted only.
    assert _total(counters, settings.REDIS_KEY_PREFIX) == admitted


def test_unused_leases_go_back_to_redis_on_close(counters, workspace, settings):
    policy_services.policy_create(workspace=workspace, name="big", kind="requests", limit=10_000, window="hour")
    _not_at_hour_end()
    enforcer = PolicyEnforcer(settings.REDIS_URL)

    async def drill() -> tuple[float, float]:
        for _ in range(3):
            assert not isinstance(await _ask(enforcer, workspace), GatewayError)
        held = _total(counters, settings.REDIS_KEY_PREFIX)
        await enforcer.close()
        return held, _total(counters, settings.REDIS_KEY_PREFIX)

    held, after_close = asyncio.run(drill())
    assert held > 3  # a chunk was taken from Redis, not one request at a time
    assert after_close == 3


def test_settlements_reach_redis_in_batches(counters, workspace, settings):
    policy_services.policy_create(workspace=workspace, name="spend", kind="cost", limit="5", window="day")
    enforcer = PolicyEnforcer(settings.REDIS_URL)

    def evals() -> int:
        return int(counters.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))

    async def drill() -> tuple[int, float, float]:
        holds = [await _ask(enforcer, workspace) for _ in range(40)]
        assert not any(isinstance(hold, GatewayError) for hold in holds)
        before = evals()
        for hold in holds:  # each used 0.01 USD, far more than its estimate
            await enforcer.settle(hold, cost="0.01", tokens=100)
        await asyncio.sleep(FLUSH_SECONDS * 4)
        flushed = _total(counters, settings.REDIS_KEY_PREFIX)
        eval_calls = evals() - before
        await enforcer.close()
        return eval_calls, flushed, _total(counters, settings.REDIS_KEY_PREFIX)

    eval_calls, flushed, after_close = asyncio.run(drill())
    assert eval_calls <= 2  # 40 settlements, batched: not one EVAL per request
    assert flushed >= 0.40 - 1e-9  # the overruns are visible in Redis after the flush
    assert after_close == pytest.approx(0.40)  # and with the leases back: exactly what was spent


def test_a_lowered_limit_is_not_served_from_an_old_lease(counters, workspace, settings):
    settings.GATEWAY_AUTH_CACHE_TTL = 1
    _not_at_hour_end()
    policy = policy_services.policy_create(
        workspace=workspace, name="lowered", kind="requests", limit=10_000, window="hour"
    )
    enforcer = PolicyEnforcer(settings.REDIS_URL)

    async def drill() -> tuple[list, float]:
        for _ in range(5):
            assert not isinstance(await _ask(enforcer, workspace), GatewayError)
        await sync_to_async(policy_services.policy_update)(policy=policy, limit=Decimal(5))
        await asyncio.sleep(1.1)  # the policy cache's TTL
        after = [await _ask(enforcer, workspace) for _ in range(3)]
        await enforcer.close()
        return after, _total(counters, settings.REDIS_KEY_PREFIX)

    after, total = asyncio.run(drill())
    # The old lease (a chunk of 10,000) still held plenty; the new limit refuses at once.
    assert all(isinstance(a, GatewayError) and a.status == 429 for a in after)
    assert "allows 5 requests" in after[0].message
    assert total == 5  # the old lease went back when the edit was seen


def test_redis_down_fails_open_or_closed_per_policy(counters, workspace):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    enforcer = PolicyEnforcer(f"redis://127.0.0.1:{port}/0")
    policy = policy_services.policy_create(workspace=workspace, name="open", kind="requests", limit=1, window="hour")

    async def ask_twice() -> list:
        answers = [await _ask(enforcer, workspace) for _ in range(2)]
        await enforcer.close()
        return answers

    # Fail open (the default): served although nothing can be counted.
    assert not any(isinstance(a, GatewayError) for a in asyncio.run(ask_twice()))
    policy_services.policy_update(policy=policy, fail_closed=True)
    policy_cache.clear()
    enforcer.clear()
    answers = asyncio.run(ask_twice())
    assert all(isinstance(a, GatewayError) and a.status == 503 for a in answers)
    assert "'open' cannot be checked right now" in answers[0].message
