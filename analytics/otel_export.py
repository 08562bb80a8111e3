"""Each stored log, exported as an OpenTelemetry span (OTLP/HTTP, protobuf) to its workspace's
collector (workspaces.models.OtelExport), off the gateway's hot path and off the writer's
transaction.

Flow: ``write_log_batch`` commits, then hands the rows it inserted to ``enqueue`` (a
``transaction.on_commit`` hook, so a rolled-back batch exports nothing and a redelivered one
exports only what is new). ``enqueue`` appends to a bounded in-memory queue and returns; one
background thread per process groups the rows by workspace, encodes them (analytics.otel_proto)
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

The HTTP client is the standard library's ``http.client`` behind the SSRF guard
(gateway.netguard): the endpoint is checked with ``check_url``, every address the host resolves
to is checked before connecting, and redirects are never followed. Not the SDK's
OTLPSpanExporter: it posts through ``requests`` (which follows redirects and resolves names
outside the guard), wants SDK span objects per log (~10x the encoding cost) and is one pipeline
per endpoint, where this sends each workspace to its own endpoint with its own headers.

Logs that came in through OTLP ingest (analytics.otel_ingest) are not exported again: the
application already sent those spans to its own collector.
"""

from __future__ import annotations

import atexit
import hashlib
import http.client
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.db import close_old_connections, connection

from analytics import otel_proto as pb
from analytics.otel_http import GuardedPoster
from gateway.netguard import BlockedUpstreamError

logger = logging.getLogger(__name__)

# Process-wide counters (spans), for metrics and tests.
export_counters: Counter[str] = Counter()

INGESTED_SDK_VERSION = "otlp"  # RequestLog.sdk_version of logs made by OTLP ingest
METADATA_PREFIX = "portico.metadata."
SCOPE_NAME = "portico"
SCOPE_VERSION = "1"
_RETRYABLE_STATUS = {408, 429, 502, 503, 504}
_MAX_BACKOFF = 5.0
# gen_ai.operation.name for the gateway's endpoints (GenAI semantic conventions).
OPERATIONS = {
    "chat/completions": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
_HEX = frozenset("0123456789abcdef")


# --- Ids ---------------------------------------------------------------------------------


def _hex_id(text: str, size: int) -> bytes | None:
    value = text.strip().lower()
    if len(value) == size * 2 and _HEX.issuperset(value) and value.strip("0"):
        return bytes.fromhex(value)
    return None


def trace_id_bytes(text: str) -> tuple[bytes, bool]:
    """(16-byte trace id, whether it was mapped). A W3C (32 hex) id is used as it is, a UUID
    (the gateway's generated ids) by its 16 bytes; anything else (Portkey trace ids are free
    text) maps deterministically to the first 16 bytes of its SHA-256, so every log of one
    Portkey trace lands in one OTel trace."""
    if (direct := _hex_id(text, 16)) is not None:
        return direct, False
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        try:
            return bytes.fromhex(text.replace("-", "")), False  # a UUID's 16 bytes
        except ValueError:
            pass
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()[:16], True


def span_id_bytes(text: str) -> tuple[bytes, bool]:
    """(8-byte span id, whether it was mapped): 16 hex used as is, anything else hashed."""
    if (direct := _hex_id(text, 8)) is not None:
        return direct, False
    return hashlib.sha256(b"span:" + text.encode("utf-8", "replace")).digest()[:8], True


def _own_span_id(log_id: uuid.UUID) -> bytes:
    # The random tail of the log's UUIDv7: unique per log and the same on every export.
    tail = log_id.bytes[8:]
    return tail if tail.strip(b"\0") else hashlib.sha256(log_id.bytes).digest()[:8]


# --- Log row -> span ---------------------------------------------------------------------


def _datetime_ns(value) -> int:
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


@lru_cache(maxsize=4096)
def _common_attributes(
    provider: str, model: str, endpoint: str, status_code: int, success: bool, cache_status: str, currency: str
) -> tuple[bytes, str]:
    """(the encoded attributes a log shares with many others, the operation name): most logs
    repeat a few (provider, model, endpoint, status) combinations, encoded once each."""
    operation_key = endpoint.lstrip("/").removeprefix("v1/")
    operation = OPERATIONS.get(operation_key, operation_key or "chat")
    attrs = [pb.string_attribute("gen_ai.operation.name", operation)]
    if provider:
        attrs.append(pb.string_attribute("gen_ai.provider.name", provider))
        attrs.append(pb.string_attribute("gen_ai.system", provider))  # the older name, still widely read
    if model:
        # The log keeps one model (the request's, else the one the answer named).
        attrs.append(pb.string_attribute("gen_ai.request.model", model))
        attrs.append(pb.string_attribute("gen_ai.response.model", model))
    attrs.append(pb.int_attribute("http.response.status_code", status_code))
    attrs.append(pb.string_attribute("portico.endpoint", endpoint))
    attrs.append(pb.string_attribute("portico.cache_status", cache_status))
    if currency:
        attrs.append(pb.string_attribute("portico.currency", currency))
    if not success:
        attrs.append(pb.string_attribute("error.type", str(status_code)))
    return b"".join(attrs), operation


_metadata_cache: dict[tuple, bytes] = {}


def _metadata_attribute(key: str, value: object) -> bytes:
    encoded = _metadata_cache.get((key, value))
    if encoded is None:
        encoded = pb.string_attribute(METADATA_PREFIX + str(key), value if type(value) is str else str(value))
        if len(_metadata_cache) >= 50_000:
            _metadata_cache.clear()
        _metadata_cache[(key, value)] = encoded
    return encoded


def encode_span(row: dict) -> bytes:
    """The span for one stored log (a coerced RequestLog row from analytics.ingest).

    Ids: the trace is the log's trace id (mapped to 16 bytes when it is not hex, the original
    kept as ``portico.trace_id``). The span's parent is the span the request carried: its
    ``x-portkey-parent-span-id`` when given (then ``x-portkey-span-id`` is this span's own id),
    else its ``traceparent`` / ``x-portkey-span-id`` span; the span's own id otherwise comes
    from the log id.
    """
    log_id = row["id"]
    attrs: list[bytes] = []
    trace_text = row["trace_id"] or str(log_id)
    trace_id, mapped = trace_id_bytes(trace_text)
    if mapped:
        attrs.append(pb.string_attribute("portico.trace_id", trace_text, unique=True))
    carried_span, carried_parent = row["span_id"], row["parent_span_id"]
    if carried_parent:
        parent, parent_mapped = span_id_bytes(carried_parent)
        own = span_id_bytes(carried_span)[0] if carried_span else _own_span_id(log_id)
    elif carried_span:
        parent, parent_mapped = span_id_bytes(carried_span)
        own = _own_span_id(log_id)
    else:
        parent, parent_mapped, own = None, False, _own_span_id(log_id)
    if carried_span:
        attrs.append(pb.string_attribute("portico.span_id", carried_span, unique=True))
    if parent_mapped and carried_parent:
        attrs.append(pb.string_attribute("portico.parent_span_id", carried_parent))

    model, status_code, cost = row["model"], row["status_code"], row["cost"]
    common, operation = _common_attributes(
        row["provider"],
        model,
        row["endpoint"],
        status_code,
        row["success"],
        row["cache_status"],
        row["currency"] if cost is not None else "",
    )
    attrs.append(common)
    attrs.append(pb.int_attribute("gen_ai.usage.input_tokens", row["prompt_tokens"]))
    attrs.append(pb.int_attribute("gen_ai.usage.output_tokens", row["completion_tokens"]))
    attrs.append(pb.string_attribute("portico.log_id", str(log_id), unique=True))
    if cost is not None:
        attrs.append(pb.double_attribute("portico.cost", float(cost)))
    if row["is_stream"]:
        attrs.append(pb.bool_attribute("portico.stream", True))
    if row["ttft_ms"] is not None:
        attrs.append(pb.double_attribute("portico.ttft_ms", float(row["ttft_ms"])))
    if row["retry_count"]:
        attrs.append(pb.int_attribute("portico.retry_count", row["retry_count"]))
    if row["config_id"]:
        attrs.append(pb.string_attribute("portico.config_id", row["config_id"]))
        attrs.append(pb.string_attribute("portico.last_used_option_index", row["last_used_option_index"]))
        attrs.append(pb.int_attribute("portico.attempts", len(row["attempts"])))
    if row["cache_saved_cost"] is not None:
        attrs.append(pb.double_attribute("portico.cache_saved_cost", float(row["cache_saved_cost"])))
    if row["user"]:
        attrs.append(pb.string_attribute("enduser.id", row["user"]))
    for key, value in row["metadata"].items():
        attrs.append(_metadata_attribute(key, value))

    message = ""
    if row["success"]:
        status = pb.STATUS_UNSET  # instrumentations leave successful spans UNSET
    else:
        status = pb.STATUS_ERROR
        message = row["error_message"][:1024]
    start_ns = _datetime_ns(row["created_at"])
    end_ns = start_ns + int(row["latency_ms"] * 1_000_000)
    return pb.span(
        trace_id=trace_id,
        span_id=own,
        parent_span_id=parent,
        name=row["span_name"] or f"{operation} {model}".strip(),
        start_ns=start_ns,
        end_ns=end_ns,
        attributes=attrs,
        status_code=status,
        status_message=message,
    )


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
                    export_counters["dropped_queue_full"] += overflow
                self._wake.notify()
        except Exception:
            export_counters["enqueue_errors"] += 1
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

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._turn()
            except Exception:  # never let the thread die: log and go on
                export_counters["thread_errors"] += 1
                logger.exception("OpenTelemetry export thread error")
                time.sleep(1.0)

    def _turn(self) -> None:
        now = time.monotonic()
        with self._lock:
            has_work = bool(self._queue) or self._has_backlog()
        if has_work and now >= self._next_refresh:
            self._refresh()
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
        limit = settings.OTEL_EXPORT_QUEUE_SIZE
        for row in rows:
            target = targets.get(row["workspace_id"])
            if target is None or row["sdk_version"] == INGESTED_SDK_VERSION:
                continue
            target.pending.append(row)
            if len(target.pending) > limit:
                target.pending.popleft()
                export_counters["dropped_queue_full"] += 1
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
                export_counters["dropped_disabled"] += len(target.pending) + (
                    target.inflight[1] if target.inflight else 0
                )
                if target.poster:
                    target.poster.close()
        with self._lock:
            self._targets = targets

    def _send(self, target: _Target) -> None:
        if target.inflight is None:
            batch = [target.pending.popleft() for _ in range(min(len(target.pending), settings.OTEL_EXPORT_BATCH_SIZE))]
            spans = []
            for number, row in enumerate(batch, start=1):
                if number % 32 == 0:
                    # Let a waiting writer thread have the GIL now rather than at the next
                    # switch interval (5 ms): the writer's commit must not queue behind encoding.
                    time.sleep(0)
                try:
                    spans.append(encode_span(row))
                except Exception:
                    export_counters["unencodable"] += 1
                    logger.exception("OpenTelemetry export: cannot encode log %s", row.get("id"))
            if not spans:
                return
            body = pb.export_request(
                resource_attributes=[("service.name", "portico"), ("portico.workspace", target.slug)],
                scope_name=SCOPE_NAME,
                scope_version=SCOPE_VERSION,
                spans=spans,
            )
            target.inflight = (body, len(spans))
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
            export_counters["exported"] += count
            target.inflight, target.attempt, target.next_attempt = None, 0, 0.0
            return
        now = time.monotonic()
        if retryable and now < target.give_up_at:
            target.attempt += 1
            export_counters["retries"] += 1
            delay = min(_MAX_BACKOFF, 0.1 * 2**target.attempt) * random.uniform(0.5, 1.0)
            target.next_attempt = min(now + max(delay, retry_after or 0.0), target.give_up_at)
            if target.attempt == 1:
                logger.warning("OpenTelemetry export to %s failed (%s); retrying", target.endpoint, problem)
            return
        export_counters["dropped_failed" if retryable else "rejected"] += count
        logger.warning(
            "OpenTelemetry export to %s: %d span(s) dropped (%s%s)",
            target.endpoint,
            count,
            problem,
            ", retry budget spent" if retryable else "",
        )
        target.inflight, target.attempt = None, 0
        target.next_attempt = now + (0.0 if not retryable else 0.5)


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
