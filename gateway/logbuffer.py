"""The gateway's log hand-off: records are buffered in memory and flushed in batches by a
background task, so a request never waits on log I/O.

Sinks, in fallback order (DESIGN.md, "The log pipeline"):

1. Redis (``REDIS_URL`` set): one stream entry per batch (field ``batch`` = JSON list), read
   by the Celery consumer (analytics.pipeline.consume_log_stream);
2. the database, directly (embedded mode, or Redis unreachable), in a worker thread;
3. a spool file under ``LOG_SPOOL_DIR`` (database unreachable too), replayed later;
4. memory: kept and retried at the next flush, up to ``max_pending`` records.

A producer may queue a record's builder instead of the record (``emit(callable)``): it is called
at the next flush, so the work of building a record happens off the request path, in a batch.

A failed sink is skipped for a few seconds, so a dead Redis or database adds latency to one
flush, not to every flush. Every fallback is logged once per back-off and counted in ``stats``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.metrics import observe_flush

logger = logging.getLogger(__name__)

_FROM_SETTINGS: Any = object()
_REDIS_TIMEOUT_S = 1.0
_BUILD_CHUNK = 16  # record builders called between two yields to the event loop (~0.3 ms)


def _reason(exc: BaseException) -> str:
    # Exception text only, one line, short: never record contents (bodies stay out of logs).
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


class LogBuffer:
    """One per worker process (see ``get_log_buffer``); ``emit`` is called from the event loop."""

    def __init__(
        self,
        *,
        redis_url: str | None = _FROM_SETTINGS,
        stream_key: str | None = None,
        spool_dir: Path | str | None = None,
        flush_interval_ms: int | None = None,
        batch_size: int | None = None,
        max_pending: int | None = None,
        backoff_s: float = 5.0,
    ) -> None:
        self.redis_url = (settings.REDIS_URL or None) if redis_url is _FROM_SETTINGS else redis_url
        self.stream_key = stream_key or settings.LOG_STREAM_KEY
        self.spool_dir = Path(spool_dir or settings.LOG_SPOOL_DIR)
        self.flush_interval = (flush_interval_ms or settings.LOG_FLUSH_INTERVAL_MS) / 1000
        self.batch_size = batch_size or settings.LOG_BATCH_SIZE
        self.max_pending = max_pending or max(100_000, 20 * self.batch_size)
        self.backoff_s = backoff_s

        self._pending: list[dict | Callable[[], dict]] = []  # records, or their builders
        self._retry: list[list[dict]] = []  # batches every sink refused; oldest first
        self._counters = dict.fromkeys(("emitted", "to_redis", "to_database", "spooled", "failed", "dropped"), 0)
        self._wakeup: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._closing = False
        self._redis: aioredis.Redis | None = None
        self._redis_down_until = 0.0
        self._database_down_until = 0.0
        self._last_error_at = 0.0
        self._replay_spool = False  # this process spooled since its last replay
        self._replaying = False
        self._executor: ThreadPoolExecutor | None = None

    # --- hot path ------------------------------------------------------------------------
    def emit(self, record: dict | Callable[[], dict]) -> None:
        """Queue one record, or a callable that builds it at the next flush (off the request
        path). O(1), no I/O, never raises."""
        try:
            self._pending.append(record)
            self._counters["emitted"] += 1
            if len(self._pending) >= self.batch_size and self._wakeup is not None:
                self._wakeup.set()
        except Exception:  # a log record must never break a response
            logger.exception("LogBuffer.emit failed")

    @property
    def stats(self) -> dict[str, int]:
        """Counters in records: failed counts attempts where every sink refused a batch (kept
        for retry); dropped counts records given up past ``max_pending``."""
        return {**self._counters, "pending": len(self._pending) + sum(map(len, self._retry))}

    @property
    def idle(self) -> bool:
        """Nothing queued and no flush delivering (tests wait for this from another thread)."""
        return not self.stats["pending"] and not (self._lock is not None and self._lock.locked())

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background flusher in the running loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="portico-log-flusher")

    async def close(self) -> None:
        """Flush everything, wait for in-flight work, release connections (shutdown)."""
        self._closing = True
        if self._task is not None:
            if self._wakeup is not None:
                self._wakeup.set()
            await asyncio.gather(self._task, return_exceptions=True)  # it may have been cancelled
            self._task = None
        await self.flush()
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if pending := self.stats["pending"]:
            logger.error("LogBuffer closing with %d log record(s) undelivered (every sink failed)", pending)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._executor is not None:
            await self._in_thread(_close_database_connections)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while not self._closing:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            if self._pending or self._retry:
                try:
                    await self.flush()
                except Exception:
                    logger.exception("Log flush failed")

    # --- flushing ------------------------------------------------------------------------
    async def flush(self) -> None:
        """Deliver everything pending now (batches of ``batch_size``), in fallback order."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            entries, self._pending = self._pending, []
            pending = await self._built(entries)
            batches = self._retry + [pending[i : i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
            self._retry = []
            for index, batch in enumerate(batches):
                if not await self._deliver(batch):
                    self._retry = batches[index:]
                    self._counters["failed"] += sum(map(len, self._retry))
                    break
            self._enforce_bound()
            # Metrics come from the records (gateway/metrics.py): counted here, off the request path.
            observe_flush(self, pending, self.stats)

    async def _built(self, entries: list) -> list[dict]:
        """The queued entries as records: builders are called now (a failing one is logged and
        counted as dropped; the others still go out), yielding to the event loop every
        ``_BUILD_CHUNK`` builders so a large batch never stalls requests for long."""
        records = []
        built = 0
        for entry in entries:
            if type(entry) is dict or not callable(entry):  # a bad record is the writer's to reject
                records.append(entry)
                continue
            built += 1
            if built % _BUILD_CHUNK == 0:
                await asyncio.sleep(0)
            try:
                records.append(entry())
            except Exception:
                self._counters["dropped"] += 1
                logger.exception("Could not build a log record; dropped")
        return records

    async def _deliver(self, batch: list[dict]) -> bool:
        count = len(batch)
        if self.redis_url and time.monotonic() >= self._redis_down_until:
            try:
                await self._to_redis(batch)
                self._counters["to_redis"] += count
                self._after_delivery()
                return True
            except Exception as exc:
                self._redis_down_until = time.monotonic() + self.backoff_s
                logger.warning(
                    "Redis unavailable (%s): log batches go to the database for the next %.0f s",
                    _reason(exc),
                    self.backoff_s,
                )
        if time.monotonic() >= self._database_down_until:
            try:
                await self._in_thread(_write_database, batch)
                self._counters["to_database"] += count
                self._after_delivery()
                return True
            except Exception as exc:
                self._database_down_until = time.monotonic() + self.backoff_s
                logger.warning(
                    "Database write of log batch failed (%s): spooling to %s for the next %.0f s",
                    _reason(exc),
                    self.spool_dir,
                    self.backoff_s,
                )
        try:
            await self._in_thread(_spool, batch, self.spool_dir)
        except Exception as exc:
            self._log_error("Could not spool %d log record(s) (%s); kept in memory for retry", count, _reason(exc))
            return False
        self._counters["spooled"] += count
        self._replay_spool = True
        return True

    def _after_delivery(self) -> None:
        # The spool is local to this host, so this process replays what it spooled once the
        # database looks reachable again (the Celery task covers spools of dead processes).
        if self._replay_spool and not self._replaying and time.monotonic() >= self._database_down_until:
            self._replay_spool = False
            self._background(self._replay())

    async def _replay(self) -> None:
        self._replaying = True
        try:
            await self._in_thread(_replay_spool, self.spool_dir)
        except Exception as exc:
            self._replay_spool = True
            self._database_down_until = time.monotonic() + self.backoff_s
            logger.warning("Spool replay failed (%s); retrying in %.0f s", _reason(exc), self.backoff_s)
        finally:
            self._replaying = False

    async def _to_redis(self, batch: list[dict]) -> None:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self.redis_url,
                socket_connect_timeout=_REDIS_TIMEOUT_S,
                socket_timeout=_REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),  # the default retries would multiply a dead Redis' cost
            )
        payload = self._encode(batch)
        async with asyncio.timeout(_REDIS_TIMEOUT_S * 2):
            await self._redis.xadd(self.stream_key, {"batch": payload})

    def _encode(self, batch: list[dict]) -> bytes:
        from analytics.pipeline import encode_batch

        try:
            return encode_batch(batch)
        except TypeError:
            # Records are JSON by contract, so this is a gateway bug: keep the good ones.
            good = []
            for record in batch:
                try:
                    encode_batch([record])
                    good.append(record)
                except TypeError:
                    self._counters["dropped"] += 1
                    record_id = record.get("id") if isinstance(record, dict) else None
                    logger.error("Dropping unserialisable log record %s", str(record_id)[:64])
            return encode_batch(good)

    def _enforce_bound(self) -> None:
        excess = self.stats["pending"] - self.max_pending
        if excess <= 0:
            return
        left = excess
        for queue in (*self._retry, self._pending):  # oldest first
            cut = min(left, len(queue))
            del queue[:cut]
            left -= cut
        self._retry = [batch for batch in self._retry if batch]
        self._counters["dropped"] += excess
        logger.error(
            "Dropped %d log record(s): every sink failed and more than %d were pending", excess, self.max_pending
        )

    # --- helpers -------------------------------------------------------------------------
    async def _in_thread(self, func, *args):
        # One dedicated thread: keeps its database connection between flushes and keeps
        # writes from this process in order (SQLite has a single writer anyway).
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portico-log-writer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _log_error(self, message: str, *args: object) -> None:
        # Every flush would repeat it while all sinks are down: once per back-off is enough.
        now = time.monotonic()
        if now - self._last_error_at >= self.backoff_s:
            self._last_error_at = now
            logger.error(message, *args)


# These run in the writer thread (the Django ORM is synchronous).
def _write_database(batch: list[dict]) -> None:
    from django.db import close_old_connections

    from analytics import ingest

    close_old_connections()
    ingest.write_log_batch(batch)


def _spool(batch: list[dict], spool_dir: Path) -> None:
    from analytics.pipeline import spool_append

    spool_append(batch, spool_dir=spool_dir)


def _replay_spool(spool_dir: Path) -> None:
    from django.db import close_old_connections

    from analytics.pipeline import replay_spool

    close_old_connections()
    replay_spool(spool_dir=spool_dir)


def _close_database_connections() -> None:
    from django.db import connections

    connections.close_all()


_buffer: LogBuffer | None = None


def get_log_buffer() -> LogBuffer:
    """This process's LogBuffer, configured from settings."""
    global _buffer
    if _buffer is None:
        _buffer = LogBuffer()
    return _buffer
