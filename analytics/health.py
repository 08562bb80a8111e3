"""Log pipeline health for ``/metrics``: the writer's counters, and gauges read at scrape time.

Counted where it happens (any process that writes logs: Celery workers, ``consume_logs``, the
embedded gateway), through prometheus_client's multiprocess files (analytics/prometheus.py):
``write_log_batch`` calls ``observe_write`` after each committed batch.

Read at scrape time by ``PipelineHealthCollector``, so they are current and cost nothing
between scrapes: the Redis stream (entries, pending in the consumer group, dead letters), the
spool directory (files, bytes, age of the oldest file) and the rollup lag. Rollups are written
in the same transaction as the logs, so the lag is the age of the oldest log record not yet
written: the oldest stream entry (entries are deleted once written) or spooled file. A scrape
never fails because Redis or the database is down: ``portico_redis_up`` /
``portico_database_up`` say 0 and the gauges that need them are left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from django.conf import settings
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from analytics.prometheus import join_metrics_dir

logger = logging.getLogger(__name__)

_REDIS_TIMEOUT_S = 0.5
# Seconds from a log's creation to its commit (logs and rollups are committed together).
WRITE_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_RESULTS = ("inserted", "duplicate", "malformed", "orphaned")


class WriterMetrics:
    def __init__(self) -> None:
        join_metrics_dir()
        self.batches = Counter("portico_log_writer_batches", "Log batches committed by the writers.", registry=None)
        self.records = Counter(
            "portico_log_writer_records",
            "Log records the writers processed, by result (inserted; duplicate of a stored one; "
            "malformed or of a deleted workspace, skipped).",
            ("result",),
            registry=None,
        )
        self.delay = Histogram(
            "portico_log_write_delay_seconds",
            "Per committed batch: seconds from its oldest log's creation to the commit.",
            buckets=WRITE_DELAY_BUCKETS,
            registry=None,
        )


_writer: WriterMetrics | None = None


def writer_counts() -> dict[str, int]:
    from analytics.ingest import ingest_counters

    return {result: ingest_counters[result] for result in _RESULTS}


def observe_write(before: dict[str, int], oldest: datetime | None) -> None:
    """After a committed batch whose oldest storable record was created at ``oldest`` (None:
    it had none); ``before`` is ``writer_counts()`` taken before it. Never raises: the batch is
    written, a metrics fault must not make it look failed."""
    global _writer
    if not settings.METRICS_ENABLED:
        return
    try:
        if _writer is None:
            _writer = WriterMetrics()
        _writer.batches.inc()
        for result, count in writer_counts().items():
            if delta := count - before[result]:
                _writer.records.labels(result).inc(delta)
        if oldest is not None:
            _writer.delay.observe(max(0.0, time.time() - oldest.timestamp()))
    except Exception:
        logger.exception("Could not update the log writer metrics")


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class PipelineHealthCollector(Collector):
    """Gauges read when ``/metrics`` is scraped (registered per scrape, never globally)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        waiting_since: list[float] = []
        yield from self._redis(waiting_since)
        yield from self._spool(now, waiting_since)
        yield from self._database()
        lag = max(0.0, now - min(waiting_since)) if waiting_since else 0.0
        yield _gauge(
            "portico_rollup_lag_seconds",
            "Age of the oldest log record handed off but not yet written (logs and rollups are written together); "
            "0 when none waits.",
            lag,
        )

    def _redis(self, waiting_since: list[float]) -> Iterator[GaugeMetricFamily]:
        if not settings.REDIS_URL:
            return  # embedded mode: no stream
        from analytics.pipeline import CONSUMER_GROUP

        stream = settings.LOG_STREAM_KEY
        try:
            client = _redis_client()
            pipe = client.pipeline(transaction=False)
            pipe.xlen(stream)
            pipe.xlen(f"{stream}:dead")
            pipe.xrange(stream, count=1)
            length, dead, oldest = pipe.execute()
            try:
                pending = client.xpending(stream, CONSUMER_GROUP)["pending"]
            except Exception as exc:  # no group yet: nothing was ever consumed
                if "NOGROUP" not in str(exc):
                    raise
                pending = 0
        except Exception as exc:
            logger.warning("Metrics: Redis unavailable (%s)", type(exc).__name__)
            yield _gauge("portico_redis_up", "1 if the log stream's Redis answered this scrape.", 0)
            return
        yield _gauge("portico_redis_up", "1 if the log stream's Redis answered this scrape.", 1)
        yield _gauge("portico_log_stream_entries", "Log batches in the Redis stream, not yet written.", length)
        yield _gauge(
            "portico_log_stream_pending_entries",
            "Stream entries delivered to a writer and not yet acknowledged (in the consumer group).",
            pending,
        )
        yield _gauge(
            "portico_log_stream_dead_letter_entries",
            "Stream entries that could never be written, parked in <stream>:dead for a human.",
            dead,
        )
        if oldest:
            entry_id = oldest[0][0]
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            waiting_since.append(int(entry_id.split("-")[0]) / 1000)  # stream ids start with ms since epoch

    def _spool(self, now: float, waiting_since: list[float]) -> Iterator[GaugeMetricFamily]:
        from analytics.pipeline import REPLAYING_SUFFIX, SPOOL_SUFFIX

        files, size, oldest = 0, 0, None
        directory = Path(settings.LOG_SPOOL_DIR)
        try:
            paths = [*directory.glob(f"*{SPOOL_SUFFIX}"), *directory.glob(f"*{REPLAYING_SUFFIX}")]
        except OSError:
            paths = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # replayed meanwhile
            files += 1
            size += stat.st_size
            oldest = stat.st_mtime if oldest is None else min(oldest, stat.st_mtime)
        yield _gauge("portico_log_spool_files", "Spool files waiting for replay on this host.", files)
        yield _gauge("portico_log_spool_bytes", "Bytes in spool files waiting for replay on this host.", size)
        yield _gauge(
            "portico_log_spool_oldest_file_age_seconds",
            "Seconds since the least recently written spool file was last appended to; 0 without spool files.",
            max(0.0, now - oldest) if oldest is not None else 0.0,
        )
        if oldest is not None:
            waiting_since.append(oldest)

    def _database(self) -> Iterator[GaugeMetricFamily]:
        from django.db import connection

        # Served by a Django view: the request cycle already recycles stale connections.
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            up = 1
        except Exception as exc:
            logger.warning("Metrics: database unavailable (%s)", type(exc).__name__)
            up = 0
        yield _gauge("portico_database_up", "1 if the database answered this scrape.", up)


_clients: dict[str, object] = {}


def _redis_client():
    # Short timeouts: a dead Redis costs a scrape half a second, not Prometheus' scrape timeout.
    client = _clients.get(settings.REDIS_URL)
    if client is None:
        import redis

        client = _clients[settings.REDIS_URL] = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S
        )
    return client
