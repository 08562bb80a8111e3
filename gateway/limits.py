"""Per-key rate limits (requests per minute -> 429) and usage limits (spend per day or month
-> 412), as Portkey answers them.

Counters live in Redis so every gateway process shares them (fixed one-minute windows for
rates; a running cost total per period for usage). When the usage counter is missing (first
use, or Redis lost it) it is rebuilt from the logs of the period. In embedded mode (no Redis)
the counters are per process. If Redis is unreachable the limits fail open: requests are
served and the failure is logged, because an observability gateway must not take the
product down with it.

The counters go through gateway.redis_wire (one pipelined connection per process), not a
redis-py pool: with more than ~100 requests in flight the pool's connections ran out and the
limits failed open exactly when they mattered.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Sum

from gateway.redis_wire import RedisWire
from workspaces.errors import GatewayError

log = logging.getLogger("portico.gateway.limits")
_PERIOD_SECONDS = {"day": 2 * 86400, "month": 32 * 86400}


def _period_start(period: str, now: datetime) -> datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _spent_from_logs(key_id: int, since: datetime) -> float:
    from analytics.models import RequestLog

    close_old_connections()
    total = RequestLog.objects.filter(api_key_id=key_id, created_at__gte=since).aggregate(s=Sum("cost"))["s"]
    return float(total or 0)


class Limiter:
    def __init__(self) -> None:
        self._redis: RedisWire | None = None
        self._local: dict[str, float] = {}
        self._redis_down_until = 0.0

    def _client(self) -> RedisWire | None:
        if not settings.REDIS_URL or time.monotonic() < self._redis_down_until:
            return None
        if self._redis is None or self._redis.url != settings.REDIS_URL:
            self._redis = RedisWire(settings.REDIS_URL)
        return self._redis

    def _redis_failed(self, exc: Exception) -> None:
        log.warning("rate/usage limits unavailable (Redis: %s); serving without them for 5 s", type(exc).__name__)
        self._redis_down_until = time.monotonic() + 5
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    async def check(self, *, key_id: int, rpm: int | None, cost_limit: float | None, period: str) -> None:
        if rpm:
            await self._check_rate(key_id, rpm)
        if cost_limit is not None:
            await self._check_usage(key_id, cost_limit, period)

    async def _check_rate(self, key_id: int, rpm: int) -> None:
        now = time.time()
        window = int(now // 60)
        name = f"{settings.REDIS_KEY_PREFIX}:rl:{key_id}:{window}"
        client = self._client()
        if client is None:
            count = self._local[name] = self._local.get(name, 0) + 1
            if len(self._local) > 10_000:
                self._local = {k: v for k, v in self._local.items() if ":rl:" not in k}
        else:
            try:
                count = await client.call("INCR", name)
                if count == 1:
                    await client.send("EXPIRE", name, 120)
            except Exception as exc:
                self._redis_failed(exc)
                return
        if count > rpm:
            retry_after = str(max(1, int(60 - now % 60)))
            raise GatewayError(
                429,
                f"Rate limit exceeded: this API key allows {rpm} requests per minute.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers=[(b"retry-after", retry_after.encode())],
            )

    def _usage_name(self, key_id: int, period: str, now: datetime) -> str:
        return f"{settings.REDIS_KEY_PREFIX}:usage:{key_id}:{period}:{_period_start(period, now):%Y%m%d}"

    async def _current_spend(self, key_id: int, period: str) -> tuple[str, float]:
        now = datetime.now(UTC)
        name = self._usage_name(key_id, period, now)
        client = self._client()
        value = self._local.get(name) if client is None else await client.call("GET", name)
        if value is None:
            spent = await sync_to_async(_spent_from_logs)(key_id, _period_start(period, now))
            if client is None:
                self._local[name] = spent
            else:
                await client.call("SET", name, repr(spent), "EX", _PERIOD_SECONDS[period], "NX")
            return name, spent
        return name, float(value)

    async def _check_usage(self, key_id: int, limit: float, period: str) -> None:
        try:
            _, spent = await self._current_spend(key_id, period)
        except Exception as exc:
            self._redis_failed(exc)
            return
        if spent >= limit:
            raise GatewayError(
                412,
                f"Usage limit reached: this API key may spend {limit:g} USD per {period} and has spent {spent:.4f}.",
                type="budget_exceeded",
                code="usage_limit_exceeded",
            )

    async def record_cost(self, *, key_id: int, period: str, cost: str | None) -> None:
        """Add a finished request's cost to its key's usage counter."""
        if not cost or Decimal(cost) == 0:
            return
        try:
            name, _ = await self._current_spend(key_id, period)
            client = self._client()
            if client is None:
                self._local[name] = self._local.get(name, 0.0) + float(cost)
            else:
                await client.call("INCRBYFLOAT", name, repr(float(cost)))
        except Exception as exc:
            self._redis_failed(exc)

    async def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


limiter = Limiter()
