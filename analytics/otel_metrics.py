"""Prometheus counters of OpenTelemetry export and ingest (README "Monitoring"), beside the
process-wide ``Counter`` dicts the modules keep for tests: what an exporter outage dropped and
what ingest ignored or rejected must be visible where operators look, not only in a log line.

- ``portico_otel_export_spans_total{result}``: ``exported``, ``rejected`` (the collector
  refused: 4xx/500), ``dropped_failed`` (retry budget spent), ``dropped_queue_full``,
  ``dropped_disabled`` (export switched off with spans queued), ``unencodable``;
- ``portico_otel_export_retries_total``: export requests retried;
- ``portico_otel_ingest_spans_total{result}``: ``accepted``, ``ignored`` (not GenAI),
  ``rejected``.

Counted per batch, never per span, and never raising into the exporter or the ingest view.
"""

from __future__ import annotations

import logging

from django.conf import settings
from prometheus_client import Counter

from analytics.prometheus import join_metrics_dir

logger = logging.getLogger(__name__)

_counters: dict[str, Counter] | None = None


def _metrics() -> dict[str, Counter]:
    global _counters
    if _counters is None:
        join_metrics_dir()
        _counters = {
            "export": Counter(
                "portico_otel_export_spans",
                "Logs exported as OTLP spans, by result (exported, rejected by the collector, dropped).",
                ("result",),
                registry=None,
            ),
            "retries": Counter("portico_otel_export_retries", "OTLP export requests retried.", registry=None),
            "ingest": Counter(
                "portico_otel_ingest_spans",
                "Spans received by OTLP ingest, by result (accepted as logs, ignored: not GenAI, rejected).",
                ("result",),
                registry=None,
            ),
        }
    return _counters


def count(kind: str, result: str | None, amount: int = 1) -> None:
    """Add ``amount`` to ``kind`` ("export", "retries", "ingest") under ``result``."""
    if amount <= 0 or not settings.METRICS_ENABLED:
        return
    try:
        counter = _metrics()[kind]
        (counter.labels(result) if result else counter).inc(amount)
    except Exception:
        logger.exception("Could not update the OpenTelemetry metrics")
