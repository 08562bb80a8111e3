"""Enforcing a workspace's policies (analytics.policies) on the hot path.

Per request: the workspace's enabled blocking policies come from a per-process cache filled with
the auth cache's TTL (an edit takes effect within GATEWAY_AUTH_CACHE_TTL), their scopes already
compiled to sets; which of them match (and with which value) is memoised per request shape. No
policy matching: nothing else happens (no Redis).

With Redis, requests count against per-process leases (gateway.policy_leases): quota taken from
Redis in chunks, atomically, so everything granted never exceeds a limit; most requests consume
the local lease with no Redis I/O, and a request waits for Redis only when a lease is short.

- requests: admitted while the lease holds one; 200 concurrent requests against a limit of 100
  admit exactly 100 (grants shrink to one request near the limit).
- tokens / cost: the estimate (prompt ~ body bytes / 4, completion = max_tokens or 1024, priced
  at the model's rates) comes out of the lease; ``settle`` replaces it by the actual (unused
  estimate back into the lease, overruns to Redis in batches). Bound: the final total exceeds
  the limit by at most the one estimate admitted last plus, for requests in flight or not yet
  settled (settled with their log record, at the log buffer's next flush), what their actual
  usage exceeds their estimates.

A policy edit: leases are keyed by the policy's shape and limit, so once the cache holds the
edited policy its old lease is returned and not used (before that, at most one chunk).

Counters lost by Redis (restart, eviction) are rebuilt from the rollups before a new lease is
granted: the grant script reports the missing ones, they are set from the logs (SET NX, so
processes agree) and the grant is run again. Minute windows are not rebuilt (see
PolicyWindow.rebuilt).

Redis unreachable: once a lease runs out, a policy fails open by default (served, warning
logged); with ``fail_closed`` its requests get a 503. Embedded mode (no REDIS_URL) keeps exact
counters in process with the same rules (no leases).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from analytics.policies import rules
from analytics.policies.models import Policy
from analytics.pricing import TokenCount
from gateway.auth import TTLCache
from gateway.conf import conf
from gateway.policy_leases import Lease, LeaseBook, LeaseGroup, Refused, Unreachable
from gateway.pricing import cached_price, price_cache, price_of
from gateway.redis_wire import RedisWire
from workspaces.errors import GatewayError

log = logging.getLogger("portico.gateway.policies")
DEFAULT_COMPLETION_ESTIMATE = 1024  # reserved tokens when a request sets no max_tokens
_MISSING = object()
_FROM_SETTINGS = object()
_DOWN = object()
_DOWN_SECONDS = 5.0
_REQUESTS, _TOKENS, _COST = "requests", "tokens", "cost"
_NO_ESTIMATE = (0.0, 0.0)


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """What the gateway needs of a policy, compiled once per cache fill."""

    id: int
    name: str
    workspace_id: int
    scope_text: str
    scope: rules.CompiledScope
    per: str
    per_kind: str
    per_key: str
    kind: str
    limit: float
    window: rules.PolicyWindow
    tz_name: str
    fail_closed: bool
    shape: str
    flags: str = ""  # the check script's: kind letter, then 1 when rebuilt from the logs
    key_prefix: str = ""  # of its counters: <prefix>:pol:<id>:<shape>:
    limit_text: str = ""

    def value_of(self, metadata: dict[str, str], model: str, provider: str, key_id: int | None) -> str | None:
        kind = self.per_kind
        if not kind:
            return ""
        if kind in ("user", "metadata"):
            return metadata.get(self.per_key) or None
        if kind == "model":
            return model or None
        if kind == "provider":
            return provider or None
        return str(key_id) if key_id is not None else None


@dataclass(slots=True)
class Counter:
    policy: ActivePolicy
    value: str
    key: str
    previous_key: str
    weight: float
    start: float
    end: float
    ttl: int
    amount: float


@dataclass(slots=True)
class Hold:
    """The reservations of one admitted request, settled by ``settle`` once it is logged."""

    budgets: list[tuple[Counter, float]] = field(default_factory=list)  # embedded: (counter, reserved)
    local: bool = False
    reserved: list[tuple[Lease, float, bool]] | None = None  # with Redis: (lease, reserved, cost?)


def _load(workspace_id: object) -> tuple[ActivePolicy, ...]:
    close_old_connections()
    found = Policy.objects.filter(workspace_id=workspace_id, enabled=True, action=Policy.Action.BLOCK)
    active = []
    for policy in found.select_related("workspace"):
        try:
            active.append(_compile(policy))
        except Exception:  # a policy saved under older rules: skip it rather than fail requests
            log.exception("policy %s cannot be compiled; not enforced", policy.pk)
    return tuple(active)


def _compile(policy: Policy) -> ActivePolicy:
    per_kind, per_key = rules.per_reader(policy.per)
    return ActivePolicy(
        id=policy.pk,
        name=policy.name,
        workspace_id=policy.workspace_id,
        scope_text=policy.scope,
        scope=rules.compile_scope(policy.scope),
        per=policy.per,
        per_kind=per_kind,
        per_key=per_key,
        kind=policy.kind,
        limit=float(policy.limit),
        window=policy.window_spec,
        tz_name=policy.workspace.time_zone or "UTC",
        fail_closed=policy.fail_closed,
        shape=policy.shape,
        flags=("r" if policy.kind == _REQUESTS else "b") + ("1" if policy.window_spec.rebuilt else "0"),
        limit_text=repr(float(policy.limit)),
        key_prefix=f"{settings.REDIS_KEY_PREFIX}:pol:{policy.pk}:{policy.shape}:",
    )


policy_cache: TTLCache[tuple[ActivePolicy, ...]] = TTLCache(
    sync_to_async(_load), lambda: settings.GATEWAY_AUTH_CACHE_TTL
)


def _rebuild_usage(counter: Counter, start: float, end: float) -> float:
    from analytics.policies.selectors import usage_between
    from workspaces.models import Workspace

    close_old_connections()
    policy = counter.policy
    workspace = Workspace.objects.get(pk=policy.workspace_id)
    return usage_between(
        workspace=workspace,
        scope=policy.scope_text,
        per=policy.per,
        value=counter.value if policy.per else None,
        kind=policy.kind,
        start=start,
        end=end,
    )


class PolicyEnforcer:
    def __init__(self, redis_url: str | object | None = _FROM_SETTINGS) -> None:
        self._redis_url = redis_url
        self._wire: RedisWire | None = None
        self._down_until = 0.0
        self._local: dict[str, tuple[float, float]] = {}  # embedded mode: key -> (value, expires)
        self._rebuilding: dict[str, asyncio.Future] = {}
        self._book = LeaseBook(self._redis, self._rebuild_redis, self._failed)
        self._memo: dict[tuple, tuple[tuple, tuple]] = {}  # see _matched
        self._estimates: dict[tuple, tuple[object, tuple[float, float]]] = {}

    # --- the request path -----------------------------------------------------------------
    async def check(
        self,
        *,
        workspace_id: int,
        metadata: dict[str, str],
        model: str,
        provider: str,
        key_id: int | None,
        doc: dict | None,
        body_size: int,
    ) -> Hold | None:
        """Count the request against every matching policy or raise its 429/412 (503 when a
        fail-closed policy's counters are unreachable). None: no policy matched."""
        policies = policy_cache.peek(workspace_id, _MISSING)
        if policies is _MISSING:
            policies = await policy_cache.get(workspace_id)
        if not policies:
            return None
        now = time.time()
        client = self._client()
        if client is None:
            return await self._check_embedded(
                policies, workspace_id, metadata, model, provider, key_id, doc, body_size, now
            )
        group = self._matched(policies, metadata, model, provider, key_id)
        if group is None:
            return None
        book = self._book
        if group.generation != book.generation or now >= group.until:
            group.renew(book, now)
        estimate = _NO_ESTIMATE
        if group.budgets:
            estimate = self._estimate_now(workspace_id, provider, model, doc, body_size)
            if estimate is None:
                estimate = await self._estimate(workspace_id, provider, model, doc, body_size)
        if group.estimate is not estimate:
            group.price(estimate)
        if book.try_take(group.takes, now):
            return Hold(reserved=group.reserved) if group.budgets else None
        leases, amounts = list(group.leases), group.amounts  # a lease is short: ask Redis
        try:
            await book.take(leases, amounts, now)  # (replaces the leases retired while it waits)
        except Refused as refused:
            raise _refusal(refused.lease, refused.used, now) from None
        except Unreachable:
            return self._unavailable(leases)
        if not group.budgets:
            return None  # rate limits only: nothing to settle
        return Hold(reserved=[(leases[i], amounts[i], group.kinds[i] == 2) for i in group.budgets])

    def _matched(self, policies, metadata, model, provider, key_id) -> LeaseGroup | None:
        """The policies a request counts against (with their counter values and leases), None
        when none matches; memoised per request shape (most requests repeat a few metadata
        sets) and policy cache fill."""
        memo_key = (id(policies), model, provider, key_id, *metadata.items())
        try:
            entry = self._memo.get(memo_key)
        except TypeError:  # a value that cannot be hashed (not a string): not memoised
            entry, memo_key = None, None
        if entry is not None and entry[0] is policies:
            return entry[1]
        matched = []
        for policy in policies:
            if policy.scope.matches(metadata, model, provider, key_id):
                value = policy.value_of(metadata, model, provider, key_id)
                if value is not None:
                    matched.append((policy, value))
        found = LeaseGroup(tuple(matched)) if matched else None
        if memo_key is not None:
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[memo_key] = (policies, found)
        return found

    async def _check_embedded(self, policies, workspace_id, metadata, model, provider, key_id, doc, body_size, now):
        counters = []
        estimate: tuple[float, float] | None = None
        for policy in policies:
            if not policy.scope.matches(metadata, model, provider, key_id):
                continue
            value = policy.value_of(metadata, model, provider, key_id)
            if value is None:
                continue
            if policy.kind == _REQUESTS:
                amount = 1.0
            else:
                if estimate is None:
                    estimate = await self._estimate(workspace_id, provider, model, doc, body_size)
                amount = estimate[0] if policy.kind == _TOKENS else estimate[1]
            counters.append(_counter(policy, value, now, amount))
        if not counters:
            return None
        await self._check_local(counters, now)
        return Hold([(c, c.amount) for c in counters if c.policy.kind != _REQUESTS], local=True)

    async def settle(self, hold: Hold | None, *, cost: str | None, tokens: int) -> None:
        """Replace the request's reserved estimates by what it used (nothing for a refusal):
        an unused estimate goes back to the lease, an overrun to Redis with the next flush."""
        self.settle_now(hold, cost=cost, tokens=tokens)

    def settle_now(self, hold: Hold | None, *, cost: str | None, tokens: int) -> None:
        """``settle`` without awaiting anything: for the log buffer's flush, which builds the
        records of requests that need no usage-limit check (gateway/logrecord.py)."""
        if hold is None:
            return
        spent = float(cost) if cost else 0.0
        if hold.reserved is not None:
            self._book.give_back_all(hold.reserved, spent, tokens)
            return
        for counter, reserved in hold.budgets:
            delta = (spent if counter.policy.kind == _COST else tokens) - reserved
            if delta and counter.key in self._local:
                value, expires = self._local[counter.key]
                self._local[counter.key] = (value + delta, expires)

    # --- Redis ------------------------------------------------------------------------------
    def _client(self) -> RedisWire | object | None:
        """The counters' Redis connection; None in embedded mode, _DOWN for a few seconds after
        a failure (then policies fail open or closed without trying)."""
        url = conf.redis_url if self._redis_url is _FROM_SETTINGS else self._redis_url
        if not url:
            return None
        if self._down_until and time.monotonic() < self._down_until:
            return _DOWN
        wire = self._wire
        if wire is None or wire.url != url:
            wire = self._wire = RedisWire(url)
        return wire

    def _redis(self) -> RedisWire:
        client = self._client()
        if client is _DOWN or client is None:
            raise Unreachable("Redis is down")
        return client

    def _failed(self, exc: Exception) -> None:
        log.warning("policy counters unavailable (Redis: %s); fail-open policies serve for 5 s", exc)
        self._down_until = time.monotonic() + _DOWN_SECONDS
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    async def _rebuild_redis(self, client: RedisWire, counter: Counter) -> None:
        for key, start, end in _buckets(counter):
            if await client.call("EXISTS", key):
                continue
            # Concurrent requests of one counter share one rebuild query.
            pending = self._rebuilding.get(key)
            if pending is None:
                pending = asyncio.ensure_future(sync_to_async(_rebuild_usage)(counter, start, min(end, time.time())))
                self._rebuilding[key] = pending
                pending.add_done_callback(lambda _, key=key: self._rebuilding.pop(key, None))
            used = await asyncio.shield(pending)
            await client.call("SET", key, repr(used), "EX", counter.ttl, "NX")
            log.info("policy %s: counter %s rebuilt from the logs (%s)", counter.policy.id, key, used)

    def _unavailable(self, counters: list[Counter] | list[Lease]) -> None:
        closed = next((c.policy for c in counters if c.policy.fail_closed), None)
        if closed is not None:
            raise GatewayError(
                503,
                f"Policy '{closed.name}' cannot be checked right now (its counters are unreachable) and "
                "refuses requests until they are back.",
                type="api_error",
                code="policy_unavailable",
                headers=[(b"retry-after", b"5")],
            )
        return None

    # --- embedded mode ---------------------------------------------------------------------
    async def _check_local(self, counters: list[Counter], now: float) -> None:
        for c in counters:
            if c.policy.window.rebuilt:
                for key, start, end in _buckets(c):
                    if self._get_local(key, now) is None:
                        used = await sync_to_async(_rebuild_usage)(c, start, min(end, now))
                        if self._get_local(key, now) is None:
                            self._local[key] = (used, now + c.ttl)
        for c in counters:  # no await from here on: check and count are one step
            used = (self._get_local(c.key, now) or 0.0) + c.weight * (self._get_local(c.previous_key, now) or 0.0)
            if (c.policy.kind == _REQUESTS and used + c.amount > c.policy.limit) or (
                c.policy.kind != _REQUESTS and used >= c.policy.limit
            ):
                raise _refusal(c, used, now)
        for c in counters:
            self._local[c.key] = ((self._get_local(c.key, now) or 0.0) + c.amount, now + c.ttl)
        if len(self._local) > 100_000:
            self._local = {k: v for k, v in self._local.items() if v[1] > now}

    def _get_local(self, key: str, now: float) -> float | None:
        entry = self._local.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def _estimate_now(
        self, workspace_id: int, provider: str, model: str, doc: dict | None, body_size: int
    ) -> tuple[float, float] | None:
        """(tokens, USD) reserved for a request before its usage is known; None when the
        price is not cached (then ``_estimate``)."""
        completion = _completion_estimate(doc)
        prompt = -(-body_size // 4)
        book = price_cache.peek("all", None)
        memo_key = (workspace_id, provider, model, prompt, completion)
        memo = self._estimates.get(memo_key)
        if memo is not None and memo[0] is book:  # same price book: same estimate
            return memo[1]
        usage = TokenCount(prompt, completion)
        priced = cached_price(workspace_id, provider, model, usage, _MISSING)
        if priced is _MISSING:
            return None
        estimate = float(prompt + completion), float(priced[0]) if priced[0] else 0.0
        if len(self._estimates) >= 4096:
            self._estimates.clear()
        self._estimates[memo_key] = (book, estimate)
        return estimate

    async def _estimate(
        self, workspace_id: int, provider: str, model: str, doc: dict | None, body_size: int
    ) -> tuple[float, float]:
        estimate = self._estimate_now(workspace_id, provider, model, doc, body_size)
        if estimate is not None:
            return estimate
        usage = TokenCount(-(-body_size // 4), _completion_estimate(doc))  # prompt ~ body bytes / 4
        try:
            priced = await price_of(workspace_id, provider, model, usage)
        except Exception:
            priced = (None, "")
        cost = float(priced[0]) if priced[0] else 0.0  # an unpriced model's cost is not counted
        return float(usage.prompt_tokens + usage.completion_tokens), cost

    def clear(self) -> None:
        self._local.clear()
        self._book.clear()
        self._memo.clear()
        self._estimates.clear()
        self._down_until = 0.0

    async def flush(self) -> None:
        """Send the queued settlements now (they go every FLUSH_SECONDS anyway)."""
        await self._book.flush(wait=True)

    async def close(self) -> None:
        """Return this process's unused leases to Redis and close the connection."""
        if self._client() not in (None, _DOWN):
            await self._book.close()
        if self._wire is not None:
            self._wire.close()
            self._wire = None


def _completion_estimate(doc: dict | None) -> int:
    """max_tokens (or its aliases), else 1024."""
    if doc:
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            value = doc.get(name)
            if value.__class__ is int and value > 0:
                return value
    return DEFAULT_COMPLETION_ESTIMATE


def _buckets(counter: Counter | Lease) -> list[tuple[str, float, float]]:
    """(key, start, end) of the buckets a check reads: the current one, and the previous one
    of a rolling window."""
    buckets = [(counter.key, counter.start, counter.end)]
    length = counter.policy.window.rolling_seconds
    if length:
        buckets.append((counter.previous_key, counter.start - length, counter.start))
    return buckets


def _counter(policy: ActivePolicy, value: str, now: float, amount: float) -> Counter:
    bucket, start, end = policy.window.bucket(now, policy.tz_name)
    base = f"{policy.key_prefix}{value}:"
    length = policy.window.rolling_seconds
    weight = 1 - (now - start) / length if length else 0.0
    current = base + str(bucket)
    previous = base + str(bucket - length) if length else current
    ttl = int(end - now) + (length or 0) + 60  # a rolling bucket serves as "previous" next
    return Counter(policy, value, current, previous, weight, start, end, ttl, amount)


def _scope_words(counter: Counter | Lease) -> str:
    policy = counter.policy
    if policy.per:
        return f"{policy.per}={counter.value}"
    return policy.scope_text or "the whole workspace"


def _refusal(counter: Counter | Lease, used: float, now: float) -> GatewayError:
    policy = counter.policy
    window = policy.window
    if policy.kind == _REQUESTS:
        retry = rules.retry_after(window, now, policy.tz_name)
        return GatewayError(
            429,
            f"Rate limit exceeded: policy '{policy.name}' allows {policy.limit:g} requests "
            f"{window.label} for {_scope_words(counter)}.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=[(b"retry-after", str(retry).encode())],
        )
    unit = "USD" if policy.kind == _COST else "tokens"
    return GatewayError(
        412,
        f"Budget exhausted: policy '{policy.name}' allows {policy.limit:g} {unit} {window.label} for "
        f"{_scope_words(counter)}; {used:.6g} used or reserved.",
        type="budget_exceeded",
        code="usage_limit_exceeded",
    )


enforcer = PolicyEnforcer()
