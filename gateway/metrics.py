"""Prometheus metrics of the gateway, taken from the log records (never on the request path).

``LogBuffer.flush`` hands each batch of new records to ``observe_flush`` before delivering it:
the records already carry everything measured (provider, model, status, latency, upstream
latency, time to first chunk, tokens, cost, metadata), so a request pays nothing for metrics
and a flush pays ~1-2 us per record. Records are grouped by label set first and each metric is
then updated once per group (one memory-mapped write per bucket that changed, not per record).

Labels: ``provider``, ``model``, ``status_class`` ("2xx") and the metadata keys listed in
``METRICS_METADATA_LABELS`` ("" when a request does not carry the key). Each label admits at
most ``METRICS_LABEL_MAX_VALUES`` distinct values per process, first come first served; later
values are counted under ``other``, so a client sending a fresh ``model`` or ``_user`` per
request cannot blow up the number of series. Authentication failures produce no log record and
are not counted here.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from bisect import bisect_left
from typing import Any

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram

from analytics.prometheus import join_metrics_dir

logger = logging.getLogger(__name__)

OTHER = "other"
# Seconds. LLM calls run from milliseconds (cache hits, embeddings) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
_SINKS = {"to_redis": "redis", "to_database": "database", "spooled": "spool"}


def _dollars(cost: Any) -> float:
    # Decimal strings from gateway/pricing.py; anything else (or NaN) would poison the counter.
    try:
        value = float(cost)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


class LabelCap:
    """At most ``limit`` distinct values per label position; values after that become ``other``."""

    def __init__(self, positions: int, limit: int) -> None:
        self.limit = limit
        self._admitted: list[set[str]] = [set() for _ in range(positions)]

    def __call__(self, position: int, value: str) -> str:
        admitted = self._admitted[position]
        if value in admitted:
            return value
        if len(admitted) < self.limit:
            admitted.add(value)
            return value
        return OTHER


class _Group:
    """What one batch adds to one label set."""

    __slots__ = ("completion_tokens", "cost", "count", "duration", "first_chunk", "prompt_tokens", "upstream")

    def __init__(self) -> None:
        self.count = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.duration = _Observed()
        self.upstream = _Observed()
        self.first_chunk = _Observed()


class _Observed:
    """Histogram observations of one batch: per-bucket counts (not cumulative) and their sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, milliseconds: Any) -> None:
        if type(milliseconds) is float or type(milliseconds) is int:
            seconds = milliseconds / 1000
            self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.total += seconds

    def apply(self, child: Histogram) -> None:
        # prometheus_client's Histogram.observe adds one observation; adding a batch's counts
        # per bucket writes each bucket once. _buckets/_sum are the values observe() updates
        # (tests/monitoring checks the exposed histogram against the records).
        if not self.total and not any(self.buckets):
            return
        for index, count in enumerate(self.buckets):
            if count:
                child._buckets[index].inc(count)
        child._sum.inc(self.total)


class GatewayMetrics:
    def __init__(self, *, metadata_labels: tuple[str, ...], max_values: int) -> None:
        join_metrics_dir()
        self.config = (metadata_labels, max_values)
        self.metadata_labels = metadata_labels
        names = ("provider", "model", "status_class", *metadata_labels)
        self.cap = LabelCap(len(names), max_values)
        self.requests = Counter("portico_requests", "Proxied requests (every logged request).", names, registry=None)
        self.duration = Histogram(
            "portico_request_duration_seconds",
            "Time from the request's arrival to the end of its response, as logged.",
            names,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.upstream = Histogram(
            "portico_upstream_duration_seconds",
            "Time spent on the provider: from sending the request to the end of its answer.",
            names,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.first_chunk = Histogram(
            "portico_stream_first_chunk_seconds",
            "Streams: time from the request's arrival to the first chunk from the provider.",
            names,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.tokens = Counter(
            "portico_tokens", "Tokens by type (input: prompt, output: completion).", (*names, "type"), registry=None
        )
        self.cost = Counter("portico_cost_usd", "Cost of priced requests in US dollars.", names, registry=None)
        self.buffered = Gauge(
            "portico_log_buffer_records",
            "Log records held in the gateways' memory, not yet handed to a sink.",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.delivered = Counter(
            "portico_log_buffer_delivered_records",
            "Log records the gateways handed to a sink.",
            ("sink",),
            registry=None,
        )
        self.dropped = Counter(
            "portico_log_buffer_dropped_records",
            "Log records the gateways gave up on (every sink failed past the memory bound, or unserialisable).",
            registry=None,
        )
        self._children: dict[tuple, tuple] = {}

    # --- records ---------------------------------------------------------------------------
    def labels_of(self, record: dict) -> tuple[str, ...]:
        cap = self.cap
        status = record.get("status_code")
        status_class = _STATUS_CLASSES.get(status // 100, "other") if type(status) is int else "other"
        values = [cap(0, str(record.get("provider") or "")), cap(1, str(record.get("model") or "")), status_class]
        metadata = record.get("metadata")
        if self.metadata_labels:
            if type(metadata) is not dict:
                metadata = {}
            for position, key in enumerate(self.metadata_labels, start=3):
                value = metadata.get(key)
                if value is None:
                    values.append("")
                else:
                    values.append(cap(position, value if type(value) is str else str(value)))
        return tuple(values)

    def observe_records(self, records: list[dict]) -> None:
        groups: dict[tuple, _Group] = {}
        for record in records:
            if type(record) is not dict:
                continue
            labels = self.labels_of(record)
            group = groups.get(labels)
            if group is None:
                group = groups[labels] = _Group()
            group.count += 1
            group.duration.add(record.get("latency_ms"))
            group.upstream.add(record.get("upstream_latency_ms"))
            if record.get("is_stream"):
                group.first_chunk.add(record.get("ttft_ms"))
            prompt, completion = record.get("prompt_tokens"), record.get("completion_tokens")
            if type(prompt) is int:
                group.prompt_tokens += prompt
            if type(completion) is int:
                group.completion_tokens += completion
            if (cost := record.get("cost")) is not None:
                group.cost += _dollars(cost)
        for labels, group in groups.items():
            self._apply(labels, group)

    def _apply(self, labels: tuple[str, ...], group: _Group) -> None:
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = (
                self.requests.labels(*labels),
                self.duration.labels(*labels),
                self.upstream.labels(*labels),
                self.first_chunk.labels(*labels),
                self.tokens.labels(*labels, "input"),
                self.tokens.labels(*labels, "output"),
                self.cost.labels(*labels),
            )
        requests, duration, upstream, first_chunk, tokens_in, tokens_out, cost = children
        requests.inc(group.count)
        group.duration.apply(duration)
        group.upstream.apply(upstream)
        group.first_chunk.apply(first_chunk)
        if group.prompt_tokens:
            tokens_in.inc(group.prompt_tokens)
        if group.completion_tokens:
            tokens_out.inc(group.completion_tokens)
        if group.cost:
            cost.inc(group.cost)

    # --- the buffer itself -----------------------------------------------------------------
    def observe_buffer(self, stats: dict[str, int], seen: dict[str, int]) -> None:
        """Buffered records now, and what the buffer delivered/dropped since ``seen``."""
        self.buffered.set(stats["pending"])
        for name, sink in _SINKS.items():
            if delta := stats[name] - seen.get(name, 0):
                self.delivered.labels(sink).inc(delta)
        if delta := stats["dropped"] - seen.get("dropped", 0):
            self.dropped.inc(delta)
        seen.update(stats)


_metrics: GatewayMetrics | None = None
_seen_by_buffer: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_last_error_at = 0.0


def gateway_metrics() -> GatewayMetrics:
    """This process' GatewayMetrics for the current settings."""
    global _metrics
    config = (tuple(settings.METRICS_METADATA_LABELS), settings.METRICS_LABEL_MAX_VALUES)
    if _metrics is None or _metrics.config != config:
        _metrics = GatewayMetrics(metadata_labels=config[0], max_values=config[1])
    return _metrics


def observe_flush(buffer: object, records: list[dict], stats: dict[str, int]) -> None:
    """Called by LogBuffer.flush with the records new since the last flush. Never raises: a
    metrics fault must not stop log delivery."""
    global _last_error_at
    if not settings.METRICS_ENABLED:
        return
    try:
        metrics = gateway_metrics()
        if records:
            metrics.observe_records(records)
        metrics.observe_buffer(stats, _seen_by_buffer.setdefault(buffer, {}))
    except Exception:
        if time.monotonic() - _last_error_at > 60:
            _last_error_at = time.monotonic()
            logger.exception("Could not update the gateway metrics")
