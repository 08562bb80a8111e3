"""Per-process leases of policy quota taken from Redis (gateway.policies' counting with Redis).

A lease belongs to one counter (policy, value, bucket). One Lua call grants a chunk of what is
left under the limit and adds it to the Redis counter atomically, so the sum of every grant, in
every process, never exceeds the limit (budgets: by at most the one estimate that crossed it).
Requests then consume the local lease without Redis I/O; a lease below a quarter of its last
grant is refilled in the background. Chunks: a sixteenth of what is left, at least one request
(one estimate), at most ``cap`` requests (estimates): 64, doubled up to 4096 for a lease used up
within FAST_SECONDS, halved when one lasts SLOW_SECONDS. Near the limit that is one request per
grant, as exact as counting every request in Redis.

Budgets: a reservation (estimate) comes out of the lease; ``give_back`` returns an unused
estimate to the live lease, and overruns (and estimates of leases that are gone) are queued and
sent in one EVAL every FLUSH_SECONDS (or sooner at FLUSH_AT entries), off the request path.
Leases idle for IDLE_SECONDS, of a bucket that ended or of a policy whose limit changed go back
to Redis (DECR of the unused part); ``close`` returns them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("portico.gateway.policies")
FRACTION = 16  # a grant is at most this fraction of what is left...
CAP = 64  # ...and at most this many requests (estimates), doubled for a lease that a process
MAX_CAP = 4096  # uses up within FAST_SECONDS (up to this), halved when it lasts SLOW_SECONDS
FAST_SECONDS, SLOW_SECONDS = 1.0, 4.0
REFILL_BELOW = 0.25  # of the last grant: refill in the background
FLUSH_SECONDS = 0.05
FLUSH_AT = 256
IDLE_SECONDS = 5.0
SWEEP_SECONDS = 1.0

# KEYS: per lease its current and previous bucket (the current one again for fixed windows).
# ARGV: per lease flags (r: requests, b: budget; then 1 when rebuilt from the logs), limit,
# need (what the request lacks locally; 0 for a background refill), have (the local lease),
# minimum grant, cap, weight of the previous bucket (0 for fixed windows), ttl.
# Returns {2, i...}: counters to rebuild first; else {0, grant1, used1, grant2, used2, ...}.
_GRANT = """
local n = #ARGV / 8
local used, fresh, missing = {}, {}, {}
for i = 1, n do
  local a = (i - 1) * 8
  local rebuilt = string.byte(ARGV[a + 1], 2) == 49
  local current = redis.call('GET', KEYS[2 * i - 1])
  local u = 0
  if current then u = tonumber(current) elseif rebuilt then missing[#missing + 1] = i else fresh[i] = true end
  local weight = tonumber(ARGV[a + 7])
  if weight > 0 then
    local previous = redis.call('GET', KEYS[2 * i])
    if previous then u = u + weight * tonumber(previous) elseif rebuilt then missing[#missing + 1] = i end
  end
  used[i] = u
end
if #missing > 0 then table.insert(missing, 1, 2) return missing end
local out = {0}
for i = 1, n do
  local a = (i - 1) * 8
  local limit, need, have = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local minimum, cap = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local left = limit - used[i]
  local g = math.min(cap, math.max(minimum, left / 16), left)
  if string.byte(ARGV[a + 1], 1) == 114 then
    g = math.floor(g)
    if g < need or g < 1 then g = 0 end
  elseif left + have <= 0 then g = 0
  elseif g < need then g = need
  end
  if g < 0 then g = 0 end
  if g > 0 then
    redis.call('INCRBYFLOAT', KEYS[2 * i - 1], tostring(g))
    if fresh[i] then redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[a + 8]) end
  end
  out[#out + 1] = tostring(g)
  out[#out + 1] = tostring(used[i])
end
return out
"""
# KEYS: counters; ARGV: the change of each. A counter Redis lost meanwhile is left alone: its
# rebuild from the logs includes what was logged.
_ADD = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBYFLOAT', KEYS[i], ARGV[i]) end
end
return 0
"""


class Unreachable(Exception):
    """Redis is down (or was a moment ago): the policies fail open or closed."""


@dataclass(slots=True, eq=False)
class Lease:
    """Quota of one counter held by this process: ``available`` is granted and not yet used."""

    policy: object  # gateway.policies.ActivePolicy
    value: str
    key: str
    previous_key: str
    start: float
    end: float
    ttl: int
    minimum: float = 1.0  # of a grant: one request, or one estimate
    available: float = 0.0
    granted: float = 0.0  # the last grant
    refill_below: float = 0.0  # REFILL_BELOW of the last grant: refill in the background
    granted_at: float = 0.0
    cap: float = CAP  # of a grant, in requests (estimates): adapts to the rate of use
    used_at: float = 0.0
    refill: asyncio.Future | None = None
    refused: float | None = None  # Redis's count when the last grant that a request needed was 0
    dead: bool = False


class Refused(Exception):
    def __init__(self, lease: Lease, used: float) -> None:
        self.lease, self.used = lease, used


class LeaseBook:
    """The leases of one process. ``client()`` returns the Redis connection or raises
    Unreachable; ``rebuild(lease)`` sets the lease's lost counters from the logs."""

    def __init__(self, client: Callable, rebuild: Callable, failed: Callable) -> None:
        self._client = client
        self._rebuild = rebuild
        self._failed = failed
        self.leases: dict[tuple[int, str], Lease] = {}
        self._pending: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._swept = 0.0
        self.generation = 0  # changes whenever a lease is retired: leases cached by callers are stale

    # --- the request path -----------------------------------------------------------------
    def lease(self, policy, value: str, now: float) -> Lease:
        lease = self.leases.get((policy.id, value))
        if lease is not None and lease.end > now:
            if lease.policy is policy:
                return lease
            old = lease.policy
            if old.key_prefix == policy.key_prefix and old.limit == policy.limit and old.tz_name == policy.tz_name:
                lease.policy = policy  # the cache was refilled with the same policy
                return lease
        if lease is not None:
            self.retire(lease)
        bucket, start, end = policy.window.bucket(now, policy.tz_name)
        base = f"{policy.key_prefix}{value}:"
        length = policy.window.rolling_seconds
        current = base + str(bucket)
        previous = base + str(bucket - length) if length else current
        ttl = int(end - now) + (length or 0) + 60  # a rolling bucket serves as "previous" next
        lease = Lease(policy, value, current, previous, start, end, ttl, used_at=now)
        self.leases[(policy.id, value)] = lease
        return lease

    def try_take(self, takes: list[tuple[Lease, float]], now: float) -> bool:
        """Consume each (lease, amount) from the local leases, all or none, without Redis:
        False when one of them is short (then ``take``)."""
        for lease, amount in takes:
            if lease.available < amount or lease.dead:
                return False
        if asyncio.get_running_loop() is not self._loop:
            return False
        low = None
        for lease, amount in takes:
            available = lease.available = lease.available - amount
            lease.used_at = now
            if available < lease.refill_below and lease.refill is None:
                if low is None:
                    low = []
                low.append(lease)
        if low is not None:  # one background grant (one task, one EVAL) for all of them
            self._start_refill(low, [0.0] * len(low))
        return True

    async def take(self, leases: list[Lease], amounts: list[float], now: float) -> None:
        """Consume ``amounts`` from ``leases``, all or none, refilling from Redis when short.
        Raises Refused (the first lease Redis has nothing left for) or Unreachable."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._new_loop(loop)
        for _attempt in range(100):
            for i, lease in enumerate(leases):
                if lease.dead:  # retired (idle, ended, edited) while this request waited
                    leases[i] = self.lease(lease.policy, lease.value, now)
            short = [i for i, lease in enumerate(leases) if lease.available < amounts[i]]
            if not short:
                for lease, amount in zip(leases, amounts, strict=True):
                    lease.available -= amount
                    lease.used_at = now
                    if lease.available < lease.refill_below and lease.refill is None:
                        self._start_refill([lease], [0.0])
                return
            busy = {leases[i].refill for i in short if leases[i].refill is not None}
            if busy:  # share the refill already asked for, then look again
                await asyncio.wait(busy)
            else:
                for i in short:
                    lease = leases[i]
                    lease.minimum = max(amounts[i], 1.0 if lease.policy.kind == "requests" else 0.0)
                    lease.refused = None
                await self._start_refill([leases[i] for i in short], [amounts[i] - leases[i].available for i in short])
            for i in short:
                lease = leases[i]
                if lease.available < amounts[i] and lease.refused is not None and lease.refill is None:
                    raise Refused(lease, lease.refused)
        raise Unreachable("policy leases kept running out during their refill")

    def give_back(self, lease: Lease, delta: float) -> None:
        """A settled reservation: ``delta`` = actual - reserved. An unused estimate goes back
        into the live lease; an overrun comes out of it first (that quota is counted in Redis
        already), the rest is queued for Redis."""
        if lease.dead or lease.end <= time.time():
            self._queue(lease.key, delta)
        elif delta < 0 or lease.available >= delta:
            lease.available -= delta
        else:
            delta -= max(lease.available, 0.0)
            lease.available = min(lease.available, 0.0)
            self._queue(lease.key, delta)

    def give_back_all(self, reserved: list[tuple[Lease, float, bool]], cost: float, tokens: float) -> None:
        """``give_back`` for each (lease, reserved, counts cost): the actual is ``cost`` for
        a cost budget's lease, else ``tokens``."""
        now = time.time()
        for lease, amount, counts_cost in reserved:
            delta = (cost if counts_cost else tokens) - amount
            if not delta:
                continue
            if not lease.dead and lease.end > now and (delta < 0 or lease.available >= delta):
                lease.available -= delta
            else:
                self.give_back(lease, delta)

    # --- refills --------------------------------------------------------------------------
    def _start_refill(self, leases: list[Lease], needs: list[float]) -> asyncio.Future:
        future = asyncio.ensure_future(self._grant(leases, needs))
        future.add_done_callback(_retrieve)  # a background refill's failure is logged already
        for lease in leases:
            lease.refill = future
        return future

    async def _grant(self, leases: list[Lease], needs: list[float]) -> None:
        try:
            client = self._client()
            now = time.time()
            keys, args = [], []
            for lease, need in zip(leases, needs, strict=True):
                if lease.granted_at:
                    lasted = now - lease.granted_at
                    if lasted < FAST_SECONDS:
                        lease.cap = min(lease.cap * 2, MAX_CAP)
                    elif lasted > SLOW_SECONDS:
                        lease.cap = max(lease.cap / 2, CAP)
                policy = lease.policy
                length = policy.window.rolling_seconds
                weight = max(0.0, 1 - (now - lease.start) / length) if length else 0.0
                keys += (lease.key, lease.previous_key)
                args += (
                    policy.flags,
                    policy.limit_text,
                    repr(max(need, 0.0)),
                    repr(max(lease.available, 0.0)),
                    repr(lease.minimum),
                    repr(lease.minimum * lease.cap),
                    repr(weight) if weight else "0",
                    lease.ttl,
                )
            if self._pending:  # queued overruns first: the grant must see them
                await self._send(client)
            for _attempt in range(3):
                answer = await client.evalsha(_GRANT, keys, args)
                if int(answer[0]) == 0:
                    break
                for index in answer[1:]:
                    await self._rebuild(client, leases[int(index) - 1])
            else:
                raise RuntimeError("policy counters kept disappearing during their rebuild")
            for i, (lease, need) in enumerate(zip(leases, needs, strict=True)):
                grant, used = float(answer[1 + 2 * i]), float(answer[2 + 2 * i])
                if lease.dead:  # retired while Redis answered: the grant goes straight back
                    if grant:
                        self._queue(lease.key, -grant)
                    continue
                lease.available += grant
                if grant:
                    lease.granted, lease.granted_at = grant, now
                    lease.refill_below = grant * REFILL_BELOW
                    lease.refused = None
                elif need > 0:
                    lease.refused = used
        except Unreachable:
            raise
        except Exception as exc:
            self._failed(exc)
            raise Unreachable(str(exc)) from exc
        finally:
            for lease in leases:
                lease.refill = None
            self._ensure_task()

    # --- giving quota back ----------------------------------------------------------------
    def retire(self, lease: Lease) -> None:
        """Forget a lease (bucket ended, policy edited, idle) and return its unused part."""
        lease.dead = True
        self.generation += 1
        if self.leases.get((lease.policy.id, lease.value)) is lease:
            del self.leases[(lease.policy.id, lease.value)]
        if lease.available > 0:
            self._queue(lease.key, -lease.available)
            lease.available = 0.0

    def _queue(self, key: str, delta: float) -> None:
        self._pending[key] = self._pending.get(key, 0.0) + delta
        if len(self._pending) >= FLUSH_AT and self._loop is not None:
            self._loop.call_soon(lambda: asyncio.ensure_future(self.flush()))
        self._ensure_task()

    def _ensure_task(self) -> None:
        if self._task is None and self._loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                return
            if running is self._loop:
                self._task = asyncio.ensure_future(self._maintain())

    async def _maintain(self) -> None:
        try:
            while self._pending or self.leases:
                await asyncio.sleep(FLUSH_SECONDS)
                now = time.time()
                if now - self._swept >= SWEEP_SECONDS:
                    self._swept = now
                    for lease in list(self.leases.values()):
                        if lease.end <= now or (now - lease.used_at > IDLE_SECONDS and lease.refill is None):
                            self.retire(lease)
                await self.flush()
        finally:
            self._task = None

    async def flush(self, *, wait: bool = False) -> None:
        """Send the queued changes in one EVAL (lost when Redis is down: counters lost with
        it are rebuilt from the logs, and a lost return only counts quota twice). ``wait``:
        until Redis has applied them."""
        if not self._pending:
            return
        try:
            client = self._client()
            await self._send(client)
            if wait:
                await client.call("PING")  # Redis answers a connection's commands in order
        except Unreachable:
            self._pending.clear()
        except Exception as exc:
            self._pending.clear()
            self._failed(exc)

    async def _send(self, client) -> None:
        pending, self._pending = self._pending, {}
        changes = [(key, delta) for key, delta in pending.items() if delta]
        if changes:
            keys = [key for key, _ in changes]
            await client.send("EVAL", _ADD, len(keys), *keys, *(repr(delta) for _, delta in changes))

    async def close(self) -> None:
        """Return every lease and send what is queued (a redeploy strands nothing)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for lease in list(self.leases.values()):
            self.retire(lease)
        await self.flush(wait=True)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _new_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Another event loop (tests run several): the old loop's refills are dead; return the
        leases (the queue is sent from this loop)."""
        self._loop = loop
        self._task = None
        for lease in list(self.leases.values()):
            lease.refill = None
            self.retire(lease)

    def clear(self) -> None:
        self.generation += 1
        self.leases.clear()
        self._pending.clear()
        self._task = None
        self._loop = None


class LeaseGroup:
    """The (policy, counter value) pairs one request shape counts against (gateway.policies
    memoises one per shape) and what each counts (0: requests, 1: tokens, 2: cost). Cached
    until a lease is retired (``LeaseBook.generation``) or one's bucket ends: their leases and,
    for the last estimate, what each takes (``takes``: try_take's pairs) and the budgets'
    reservations (``reserved``: what ``settle`` gives back). Lists are replaced, never changed."""

    __slots__ = (
        "amounts",
        "budgets",
        "estimate",
        "generation",
        "kinds",
        "leases",
        "pairs",
        "reserved",
        "takes",
        "until",
    )

    def __init__(self, pairs: tuple[tuple[object, str], ...]) -> None:
        self.pairs = pairs
        self.kinds = tuple({"requests": 0, "tokens": 1}.get(policy.kind, 2) for policy, _ in pairs)
        self.budgets = tuple(i for i, kind in enumerate(self.kinds) if kind)
        self.leases: list[Lease] = []
        self.generation = -1
        self.until = 0.0
        self.estimate: tuple[float, float] | None = None
        self.amounts: list[float] = []
        self.takes: list[tuple[Lease, float]] = []
        self.reserved: list[tuple[Lease, float, bool]] = []

    def renew(self, book: LeaseBook, now: float) -> None:
        lease_of = book.lease
        self.leases = [lease_of(policy, value, now) for policy, value in self.pairs]
        self.generation = book.generation
        self.until = min(lease.end for lease in self.leases)
        self._link()

    def price(self, estimate: tuple[float, float]) -> None:
        choices = (1.0, *estimate)
        self.amounts = [choices[kind] for kind in self.kinds]
        self.estimate = estimate
        self._link()

    def _link(self) -> None:
        if len(self.amounts) == len(self.leases):  # (both lists are replaced, never changed)
            self.takes = list(zip(self.leases, self.amounts, strict=True))
            self.reserved = [(self.leases[i], self.amounts[i], self.kinds[i] == 2) for i in self.budgets]


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
