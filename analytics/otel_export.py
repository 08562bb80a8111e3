"""Each stored log, exported as an OpenTelemetry span (OTLP/HTTP, protobuf) to its workspace's
collector (workspaces.models.OtelExport), off the gateway's hot path and off the writer's
transaction.

Flow: ``write_log_batch`` commits, then hands the rows it inserted to ``enqueue`` (a
``transaction.on_commit`` hook, so a rolled-back batch exports nothing and a redelivered one
exports only what is new). ``enqueue`` appends to a bounded in-memory queue and returns; one
background thread per process groups the rows by workspace, encodes them (analytics.otel_spans)
and POSTs them. So a collector that is down, slow or answering 500 never blocks, slows or fails
the log write; what it costs is bounded:

- the queue holds at most OTEL_EXPORT_QUEUE_SIZE rows per process (and so does each
  workspace's backlog); when full the OLDEST rows are dropped and counted (``dropped_queue_full``);
- a batch that fails with a retryable answer (connection error, timeout, 408/429/502/503/504)
  is retried with exponential backoff and jitter (Retry-After honoured) for up to
  OTEL_EXPORT_RETRY_SECONDS, then dropped and counted (``dropped_failed``); other answers
  (400, 401, 500, a redirect) are not retried (``rejected``), as the OTLP spec says. One
  workspace's collector being down does not hold back another's (each has its own backoff);
- nothing here raises into the writer: ``enqueue`` catches everything and counts it.

The HTTP client is the one upstream client (workspaces.upstream, run synchronously by
analytics.otel_http) behind the SSRF guard: the endpoint is checked with ``check_url``, every
address the host resolves to is checked before connecting, proxies are honoured and redirects
are never followed. Not the SDK's
OTLPSpanExporter: it posts through ``requests`` (which follows redirects and resolves names
outside the guard), wants SDK span objects per log (~10x the encoding cost) and is one pipeline
per endpoint, where this sends each workspace to its own endpoint with its own headers.

Logs that came in through OTLP ingest (analytics.otel_ingest) are not exported again: the
application already sent those spans to its own collector.
"""

from __future__ import annotations

import atexit
import http.client
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection

from analytics import otel_metrics
from analytics import otel_proto as pb
from analytics.otel_http import GuardedPoster
from analytics.otel_spans import INGESTED_SDK_VERSION, SCOPE_NAME, SCOPE_VERSION, encode_span, encode_spans
from workspaces.upstream.netguard import BlockedUpstreamError

logger = logging.getLogger(__name__)

# Process-wide counters (spans), for tests; _count also adds them to /metrics (analytics.otel_metrics).
export_counters: Counter[str] = Counter()
# Span outcomes that /metrics counts under portico_otel_export_spans_total{result}.
_SPAN_RESULTS = frozenset(
    ("exported", "rejected", "dropped_failed", "dropped_queue_full", "dropped_disabled", "unencodable")
)


def _count(result: str, amount: int = 1) -> None:
    if amount <= 0:
        return
    export_counters[result] += amount
    if result in _SPAN_RESULTS:
        otel_metrics.count("export", result, amount)
    elif result == "retries":
        otel_metrics.count("retries", None, amount)


_RETRYABLE_STATUS = {408, 429, 502, 503, 504}
_MAX_BACKOFF = 5.0


# --- Exporter ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Target:
    """One workspace's collector, its backlog and its retry state."""

    workspace_id: int
    slug: str
    endpoint: str
    headers: dict[str, str]
    poster: GuardedPoster | None = None
    pending: deque = field(default_factory=deque)
    inflight: tuple[bytes, int] | None = None
    attempt: int = 0
    give_up_at: float = 0.0
    next_attempt: float = 0.0


class OtelExporter:
    """The process's exporter: a bounded queue and one background thread (started on first use,
    and again in a forked child)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[dict] = deque()
        self._targets: dict[int, _Target] | None = None  # None until first loaded
        self._next_refresh = 0.0
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._busy = False
        self._stopping = False

    # Called by the writer -------------------------------------------------------------

    def enqueue(self, rows: list[dict]) -> None:
        """Queue the rows of the workspaces that export; never raises, never blocks on I/O."""
        try:
            targets = self._targets
            # A fresh snapshot of who exports filters here, in the writer; a stale one (or none
            # yet) lets everything through and the thread filters after reloading: an idle
            # exporter never touches the database.
            if targets is not None and time.monotonic() < self._next_refresh:
                if not targets:
                    return
                rows = [r for r in rows if r["workspace_id"] in targets and r["sdk_version"] != INGESTED_SDK_VERSION]
                if not rows:
                    return
            self._ensure_thread()
            with self._lock:
                self._queue.extend(rows)
                overflow = len(self._queue) - settings.OTEL_EXPORT_QUEUE_SIZE
                for _ in range(max(0, overflow)):
                    self._queue.popleft()
                if overflow > 0:
                    _count("dropped_queue_full", overflow)
                self._wake.notify()
        except Exception:
            _count("enqueue_errors")
            logger.exception("OpenTelemetry export: could not queue %d span(s)", len(rows))

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # a forked child (Celery prefork) starts afresh
                self._queue.clear()
                self._targets = None
                self._next_refresh = 0.0
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="portico-otel-export", daemon=True)
                self._thread.start()

    # Tests and shutdown ---------------------------------------------------------------

    def refresh_soon(self) -> None:
        """Reload the workspaces' export settings at the next turn (tests; after a change)."""
        with self._lock:
            self._next_refresh = 0.0
            self._wake.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued is sent or dropped; True if it was within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._queue and not self._busy and not self._has_backlog()
            if idle:
                return True
            time.sleep(0.01)
        return False

    def _has_backlog(self) -> bool:
        return any(t.pending or t.inflight for t in (self._targets or {}).values())

    # The background thread ------------------------------------------------------------

    def stop(self) -> None:
        """End the background thread (tests; the process's exporter runs until exit)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if not self._thread.is_alive():  # its connections are ours to close now
                for target in (self._targets or {}).values():
                    if target.poster is not None:
                        target.poster.close()
                        target.poster = None

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._turn()
            except Exception:  # never let the thread die: log and go on
                _count("thread_errors")
                logger.exception("OpenTelemetry export thread error")
                time.sleep(1.0)

    def _turn(self) -> None:
        now = time.monotonic()
        with self._lock:
            targets = self._targets or {}
            ready = [t for t in targets.values() if (t.pending or t.inflight) and t.next_attempt <= now]
            if not self._queue and not ready:
                self._busy = False
                waits = [t.next_attempt for t in targets.values() if t.pending or t.inflight]
                # Idle: sleep until rows arrive (notify) or a backoff ends.
                self._wake.wait(timeout=max(0.005, min(waits) - now) if waits else None)
                return
            self._busy = True
            rows, self._queue = list(self._queue), deque()
        # Reloaded after the rows were taken, never between a look at the queue and taking it:
        # rows queued in between (the first rows, which start this thread) would otherwise be
        # sorted against settings not loaded yet and dropped as "not exporting".
        if now >= self._next_refresh:
            self._refresh()
            targets = self._targets or {}
        limit, dropped = settings.OTEL_EXPORT_QUEUE_SIZE, 0
        for row in rows:
            target = targets.get(row["workspace_id"])
            if target is None or row["sdk_version"] == INGESTED_SDK_VERSION:
                continue
            target.pending.append(row)
            if len(target.pending) > limit:
                target.pending.popleft()
                dropped += 1
        _count("dropped_queue_full", dropped)
        for target in targets.values():
            if (target.pending or target.inflight) and target.next_attempt <= time.monotonic():
                self._send(target)

    def _refresh(self) -> None:
        from workspaces.models import OtelExport, Workspace

        self._next_refresh = time.monotonic() + settings.OTEL_EXPORT_REFRESH_SECONDS
        try:
            close_old_connections()
            # Two single-table queries rather than a join: a statement that locks one table
            # cannot deadlock with a TRUNCATE of many (tests flush between cases).
            configs = list(OtelExport.objects.filter(enabled=True))
            slugs = dict(Workspace.objects.filter(id__in=[c.workspace_id for c in configs]).values_list("id", "slug"))
            fresh = {
                c.workspace_id: (slugs[c.workspace_id], c.endpoint, c.get_headers())
                for c in configs
                if c.workspace_id in slugs
            }
        except Exception as exc:
            logger.warning("OpenTelemetry export: cannot load the export settings (%s); keeping the previous ones", exc)
            if self._targets is None:
                self._targets = {}
            return
        finally:
            # Not kept open between refreshes: an idle connection held by a daemon thread would
            # outlive its use (and block dropping a test database).
            connection.close()
        old = self._targets or {}
        targets = {}
        for workspace_id, (slug, endpoint, headers) in fresh.items():
            target = old.get(workspace_id)
            if target is None or (target.endpoint, target.headers) != (endpoint, headers):
                replaced = target
                target = _Target(workspace_id=workspace_id, slug=slug, endpoint=endpoint, headers=headers)
                if replaced is not None:  # new endpoint or headers: the backlog goes there
                    target.pending = replaced.pending
                    if replaced.poster:
                        replaced.poster.close()
            targets[workspace_id] = target
        for workspace_id, target in old.items():
            if workspace_id not in targets:
                _count("dropped_disabled", len(target.pending) + (target.inflight[1] if target.inflight else 0))
                if target.poster:
                    target.poster.close()
        with self._lock:
            self._targets = targets

    def _send(self, target: _Target) -> None:
        if target.inflight is None:
            batch = [target.pending.popleft() for _ in range(min(len(target.pending), settings.OTEL_EXPORT_BATCH_SIZE))]
            spans, count = [], 0
            for start in range(0, len(batch), _ENCODE_CHUNK):
                # Let a waiting writer thread have the GIL now rather than at the next switch
                # interval (5 ms): the writer's commit must not queue behind encoding.
                time.sleep(0)
                chunk = batch[start : start + _ENCODE_CHUNK]
                encoded, encoded_count = _encode(chunk)
                spans.extend(encoded)
                count += encoded_count
            if not count:
                return
            body = pb.framed_export_request(
                resource_attributes=[("service.name", "portico"), ("portico.workspace", target.slug)],
                scope_name=SCOPE_NAME,
                scope_version=SCOPE_VERSION,
                framed_spans=spans,
            )
            target.inflight = (body, count)
            target.attempt = 0
            target.give_up_at = time.monotonic() + settings.OTEL_EXPORT_RETRY_SECONDS
        body, count = target.inflight
        retry_after = None
        try:
            if target.poster is None:
                target.poster = GuardedPoster(target.endpoint, target.headers, settings.OTEL_EXPORT_TIMEOUT)
            status, retry_after = target.poster.post(body)
            retryable = status in _RETRYABLE_STATUS
            problem = f"HTTP {status}"
        except (BlockedUpstreamError, ValueError) as exc:
            status, retryable, problem = 0, False, str(exc)
        except (OSError, http.client.HTTPException) as exc:
            status, retryable, problem = 0, True, f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            _count("exported", count)
            target.inflight, target.attempt, target.next_attempt = None, 0, 0.0
            return
        now = time.monotonic()
        if retryable and now < target.give_up_at:
            target.attempt += 1
            _count("retries")
            delay = min(_MAX_BACKOFF, 0.1 * 2**target.attempt) * random.uniform(0.5, 1.0)
            target.next_attempt = min(now + max(delay, retry_after or 0.0), target.give_up_at)
            if target.attempt == 1:
                logger.warning("OpenTelemetry export to %s failed (%s); retrying", target.endpoint, problem)
            return
        _count("dropped_failed" if retryable else "rejected", count)
        logger.warning(
            "OpenTelemetry export to %s: %d span(s) dropped (%s%s)",
            target.endpoint,
            count,
            problem,
            ", retry budget spent" if retryable else "",
        )
        target.inflight, target.attempt = None, 0
        target.next_attempt = now + (0.0 if not retryable else 0.5)


_ENCODE_CHUNK = 64


def _encode(rows: list[dict]) -> tuple[list[bytes], int]:
    """(the rows' spans framed for the request, how many): all at once, or one by one when one
    of them cannot be encoded (counted, logged, left out)."""
    try:
        return encode_spans(rows), len(rows)
    except Exception:
        spans = []
        for row in rows:
            try:
                spans.append(pb.span_field(encode_span(row)))
            except Exception:
                _count("unencodable")
                logger.exception("OpenTelemetry export: cannot encode log %s", row.get("id"))
        return spans, len(spans)


_exporter = OtelExporter()


def exporter() -> OtelExporter:
    return _exporter


def enqueue(rows: list[dict]) -> None:
    """The log writer's hook (after commit): export these stored rows. Never raises."""
    _exporter.enqueue(rows)


@atexit.register
def _flush_at_exit() -> None:
    # A short grace period so the last batch of a stopping worker is not lost for nothing.
    if _exporter._thread is not None and _exporter._pid == os.getpid():
        _exporter.flush(timeout=2.0)
