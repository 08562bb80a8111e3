"""Policies with the real Redis: the concurrency bounds (one atomic script per request) and a
Redis restart in the middle of a window (counters rebuilt from the logs, so a restart does not
reset a budget). The restart drill runs its own redis-server on another port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from decimal import Decimal

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.db import connections

from analytics.models import RequestLog
from analytics.policies import services as policy_services
from analytics.pricing import TokenCount, catalogue_rates, compute_cost
from gateway.policies import PolicyEnforcer, enforcer, policy_cache
from tests.alerts.conftest import write_logs
from workspaces.errors import GatewayError

pytestmark = pytest.mark.redis


def _forget_counters(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}:pol:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def pol(gw, settings):
    _forget_counters(settings.REDIS_URL, settings.REDIS_KEY_PREFIX)  # ids restart with the test database
    policy_cache.clear()
    enforcer.clear()
    yield gw
    policy_cache.clear()


def _not_at_hour_end() -> None:
    if time.time() % 3600 > 3590:
        time.sleep(3600 - time.time() % 3600 + 0.1)


async def _fire(gw, count: int, body: dict) -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(gw.v1 + "/chat/completions", json=body, headers=gw.headers()) for _ in range(count))
        )
    return [answer.status_code for answer in answers]


def test_200_concurrent_requests_against_a_limit_of_100_admit_100(pol):
    policy_services.policy_create(workspace=pol.workspace, name="hundred", kind="requests", limit=100, window="hour")
    _not_at_hour_end()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    statuses = asyncio.run(_fire(pol, 200, body))
    assert statuses.count(200) == 100
    assert statuses.count(429) == 100


def test_a_cost_budget_overshoots_by_at_most_one_estimate(pol):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    rates = catalogue_rates("gpt-4")
    # The gateway reserves (body bytes / 4) prompt tokens + max_tokens; the body is < 800 bytes.
    estimate_bound = compute_cost(rates, TokenCount(200, 5))
    limit = Decimal("0.002")
    policy_services.policy_create(workspace=pol.workspace, name="spend", kind="cost", limit=limit, window="day")
    statuses = asyncio.run(_fire(pol, 200, body))
    assert statuses.count(412) > 0 and statuses.count(200) > 1
    logs = pol.wait_for_logs(200)
    spent = sum((log.cost or 0 for log in logs if log.status_code == 200), Decimal(0))
    assert spent <= limit + estimate_bound
    # Reservations in flight refused some of the 200; settled, the unused part is given back.
    if spent < limit:
        assert pol.post(json=body).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(port: int, directory) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_redis_restart_mid_window_keeps_budgets(transactional_db, workspace, settings, tmp_path):
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    policy_cache.clear()
    policy_services.policy_create(
        workspace=workspace, name="user month", per="_user", kind="cost", limit="1", window="month"
    )
    write_logs(workspace, {"user": "alice", "metadata": {"_user": "alice"}, "cost": "0.60"})
    enforcer_ = PolicyEnforcer(settings.REDIS_URL)

    def ask(user: str):
        return enforcer_.check(
            workspace_id=workspace.pk,
            metadata={"_user": user},
            model="gpt-4o-mini",
            provider="openai",
            key_id=None,
            doc={"max_tokens": 10},
            body_size=100,
        )

    async def drill() -> None:
        nonlocal proc
        hold = await ask("alice")  # 0.60 spent (rebuilt from the logs) < 1: admitted
        assert hold is not None
        await enforcer_.settle(hold, cost="0.50", tokens=10)
        await sync_to_async(write_logs)(workspace, {"user": "alice", "metadata": {"_user": "alice"}, "cost": "0.50"})
        with pytest.raises(GatewayError) as refused:
            await ask("alice")
        assert refused.value.status == 412 and "_user=alice" in refused.value.message
        proc.terminate()
        proc.wait(10)
        proc = _start_redis(port, tmp_path)  # empty: every counter is gone
        # (Only the counters: the suite's log-stream consumer thread follows settings.REDIS_URL
        # and may already have created its stream here.)
        assert redis.Redis(port=port).keys(f"{settings.REDIS_KEY_PREFIX}:pol:*") == []
        with pytest.raises(GatewayError) as again:
            await ask("alice")
        assert again.value.status == 412  # 1.10 rebuilt from the logs, not 0
        assert await ask("bob") is not None  # nothing spent
        await enforcer_.close()
        await sync_to_async(connections.close_all)()  # the rebuild queries' thread

    try:
        asyncio.run(drill())
    finally:
        proc.terminate()
        proc.wait(10)
        policy_cache.clear()
    assert RequestLog.objects.filter(workspace=workspace).count() == 2


def test_a_limit_lowered_while_requests_flow_takes_effect_within_the_ttl(pol, settings):
    """Requests keep flowing through the gateway while the limit drops from 100,000 to 1: once
    the auth cache TTL has passed, every request is refused, although this process still held
    a lease taken under the old limit."""
    settings.GATEWAY_AUTH_CACHE_TTL = 1
    _not_at_hour_end()
    policy = policy_services.policy_create(
        workspace=pol.workspace, name="lowered", kind="requests", limit=100_000, window="hour"
    )
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    results: list[tuple[float, int]] = []  # (when sent, status)

    async def flow() -> float:
        async with httpx.AsyncClient(timeout=30) as client:
            stop = time.monotonic() + 60

            async def worker() -> None:
                while time.monotonic() < stop:
                    sent = time.monotonic()
                    answer = await client.post(pol.v1 + "/chat/completions", json=body, headers=pol.headers())
                    results.append((sent, answer.status_code))

            workers = [asyncio.ensure_future(worker()) for _ in range(4)]
            await asyncio.sleep(0.5)
            await sync_to_async(policy_services.policy_update)(policy=policy, limit=Decimal(1))
            lowered_at = time.monotonic()
            stop = lowered_at + 2.5
            await asyncio.gather(*workers)
            await sync_to_async(connections.close_all)()
            return lowered_at

    lowered_at = asyncio.run(flow())
    before = [status for sent, status in results if sent < lowered_at]
    settled = [status for sent, status in results if sent > lowered_at + settings.GATEWAY_AUTH_CACHE_TTL + 0.2]
    assert before and set(before) == {200}
    assert len(settled) >= 5 and set(settled) == {429}
