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


_NO_METADATA: dict = {}


def _text(value: Any) -> str:
    return value if type(value) is str else "" if value is None else str(value)


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
    """What one batch adds to one raw label set: counts, token and cost sums, and the latencies
    (milliseconds) still to be sorted into buckets."""

    __slots__ = ("completion_tokens", "cost", "count", "durations", "first_chunks", "prompt_tokens", "upstreams")

    def __init__(self) -> None:
        self.count = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.durations: list = []
        self.upstreams: list = []
        self.first_chunks: list = []


def _observe(child: Histogram, milliseconds: list) -> None:
    """Add a batch's latencies to a histogram child: one write per bucket that changed.

    prometheus_client's Histogram.observe adds one observation at a time (two memory-mapped
    writes each); _buckets (one value per bucket, not cumulative) and _sum are the values it
    updates (tests/monitoring checks the exposed histogram against the records)."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
    total = 0.0
    for value in milliseconds:
        if type(value) is float or type(value) is int:
            seconds = value / 1000
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            total += seconds
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)
    if total:
        child._sum.inc(total)


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
    def labels_of(self, provider: Any, model: Any, status: Any, *metadata_values: Any) -> tuple[str, ...]:
        """The capped label values of one raw label set (as ``observe_records`` groups records)."""
        cap = self.cap
        status_class = _STATUS_CLASSES.get(status // 100, OTHER) if type(status) is int else OTHER
        values = [cap(0, _text(provider)), cap(1, _text(model)), status_class]
        for position, value in enumerate(metadata_values, start=3):
            values.append("" if value is None else cap(position, _text(value)))
        return tuple(values)

    def observe_records(self, records: list[dict]) -> None:
        # Grouped by the raw values first (a tuple and a dict lookup per record); caps and label
        # children are then looked up once per group, and each metric written once per group.
        groups: dict[tuple, _Group] = {}
        keys = self.metadata_labels
        for record in records:
            if type(record) is not dict:
                continue
            get = record.get
            if keys:
                metadata = get("metadata")
                if type(metadata) is not dict:
                    metadata = _NO_METADATA
                raw = (get("provider"), get("model"), get("status_code"), *[metadata.get(key) for key in keys])
            else:
                raw = (get("provider"), get("model"), get("status_code"))
            try:
                group = groups.get(raw)
            except TypeError:  # an unhashable value (a list in metadata): its text stands in
                raw = tuple(map(_text, raw))
                group = groups.get(raw)
            if group is None:
                group = groups[raw] = _Group()
            group.count += 1
            group.durations.append(get("latency_ms"))
            group.upstreams.append(get("upstream_latency_ms"))
            if get("is_stream"):
                group.first_chunks.append(get("ttft_ms"))
            prompt, completion, cost = get("prompt_tokens"), get("completion_tokens"), get("cost")
            if type(prompt) is int:
                group.prompt_tokens += prompt
            if type(completion) is int:
                group.completion_tokens += completion
            if cost is not None:
                group.cost += _dollars(cost)
        for raw, group in groups.items():
            self._apply(self.labels_of(*raw), group)

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
        _observe(duration, group.durations)
        _observe(upstream, group.upstreams)
        if group.first_chunks:
            _observe(first_chunk, group.first_chunks)
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
