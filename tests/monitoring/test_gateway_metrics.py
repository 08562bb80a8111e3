"""Gateway metrics from log records: labels, the metadata allow-list, the cardinality cap, and
what a flush of the real LogBuffer counts."""

from __future__ import annotations

import asyncio

import pytest

from gateway.logbuffer import LogBuffer
from gateway.metrics import GatewayMetrics
from tests.monitoring.conftest import scrape, value

pytestmark = pytest.mark.django_db


def record(model: str, **overrides) -> dict:
    base = {
        "provider": "@mock",
        "model": model,
        "status_code": 200,
        "latency_ms": 12.5,
        "upstream_latency_ms": 10.0,
        "ttft_ms": None,
        "is_stream": False,
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "cost": "0.00001200",
        "metadata": {"environment": "production", "feature": "chat"},
    }
    return {**base, **overrides}


def test_it_counts_requests_tokens_cost_and_latency_by_label(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=("environment", "feature"), max_values=100)
    metrics.observe_records([record(unique), record(unique), record(unique, status_code=429, cost=None)])
    text = scrape()
    ok = {"model": unique, "status_class": "2xx", "environment": "production", "feature": "chat"}
    assert value(text, "portico_requests_total", **ok) == 2
    assert value(text, "portico_requests_total", model=unique, status_class="4xx") == 1
    assert value(text, "portico_tokens_total", model=unique, type="input") == 12
    assert value(text, "portico_tokens_total", model=unique, type="output") == 15
    assert value(text, "portico_cost_usd_total", **ok) == pytest.approx(0.000024)
    assert value(text, "portico_request_duration_seconds_count", **ok) == 2
    assert value(text, "portico_request_duration_seconds_sum", **ok) == pytest.approx(0.025)
    # 12.5 ms falls in the 25 ms bucket, not the 10 ms one.
    assert value(text, "portico_request_duration_seconds_bucket", le="0.01", **ok) == 0
    assert value(text, "portico_request_duration_seconds_bucket", le="0.025", **ok) == 2
    assert value(text, "portico_upstream_duration_seconds_sum", **ok) == pytest.approx(0.02)


def test_first_chunk_latency_is_counted_for_streams_only(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=(), max_values=100)
    metrics.observe_records([record(unique, is_stream=True, ttft_ms=300.0), record(unique, ttft_ms=None)])
    text = scrape()
    assert value(text, "portico_stream_first_chunk_seconds_count", model=unique) == 1
    assert value(text, "portico_stream_first_chunk_seconds_bucket", model=unique, le="0.25") == 0
    assert value(text, "portico_stream_first_chunk_seconds_bucket", model=unique, le="0.5") == 1


def test_metadata_keys_outside_the_allow_list_are_not_labels(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=("environment",), max_values=100)
    metrics.observe_records([record(unique, metadata={"environment": "staging", "_user": "alice"})])
    samples = [line for line in scrape().splitlines() if unique in line]
    assert samples
    assert all("alice" not in line and "_user" not in line for line in samples)
    assert value(scrape(), "portico_requests_total", model=unique, environment="staging") == 1


def test_a_missing_metadata_key_is_an_empty_label(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=("environment", "feature"), max_values=100)
    metrics.observe_records([record(unique, metadata={"environment": "dev"})])
    assert value(scrape(), "portico_requests_total", model=unique, environment="dev", feature="") == 1


def test_values_past_the_cap_count_as_other(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=("feature",), max_values=2)
    features = [f"{unique}-{n}" for n in range(5)]
    metrics.observe_records([record(unique, metadata={"feature": feature}) for feature in features])
    text = scrape()
    assert value(text, "portico_requests_total", model=unique, feature=features[0]) == 1
    assert value(text, "portico_requests_total", model=unique, feature=features[1]) == 1
    for feature in features[2:]:
        assert value(text, "portico_requests_total", model=unique, feature=feature) is None
    assert value(text, "portico_requests_total", model=unique, feature="other") == 3
    # An admitted value keeps its own series later on.
    metrics.observe_records([record(unique, metadata={"feature": features[1]})])
    assert value(scrape(), "portico_requests_total", model=unique, feature=features[1]) == 2


def test_the_model_label_is_capped_too(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=(), max_values=1)
    metrics.observe_records([record(f"{unique}-a"), record(f"{unique}-b"), record(f"{unique}-c")])
    text = scrape()
    assert value(text, "portico_requests_total", model=f"{unique}-a") == 1
    assert value(text, "portico_requests_total", model=f"{unique}-b") is None
    # "other" is shared with every other capped model of this process: at least these two.
    assert value(text, "portico_requests_total", model="other") >= 2


def test_odd_values_never_break_a_flush(metrics_on, unique):
    metrics = GatewayMetrics(metadata_labels=("environment",), max_values=100)
    odd = [
        record(unique, cost="nan", latency_ms=None, prompt_tokens=None, metadata=None, status_code="200"),
        record(unique, cost="not a number", metadata={"environment": 7}),
        "not a record",
    ]
    metrics.observe_records(odd)
    text = scrape()
    assert value(text, "portico_requests_total", model=unique) == 2
    assert value(text, "portico_requests_total", model=unique, environment="7") == 1
    assert not value(text, "portico_cost_usd_total", model=unique)  # no NaN, no made-up cost


def test_a_log_buffer_flush_counts_records_and_deliveries(metrics_on, unique, tmp_path):
    before = value(scrape(), "portico_log_buffer_delivered_records_total", sink="spool") or 0
    # No Redis, and a database that cannot be reached: the batch is spooled.
    buffer = LogBuffer(redis_url=None, spool_dir=tmp_path, flush_interval_ms=10_000)
    buffer._database_down_until = float("inf")
    for _ in range(3):
        buffer.emit(record(unique))
    asyncio.run(buffer.flush())
    text = scrape()
    assert value(text, "portico_requests_total", model=unique) == 3
    assert value(text, "portico_log_buffer_delivered_records_total", sink="spool") == before + 3
    assert value(text, "portico_log_buffer_records") is not None


def test_metrics_off_counts_nothing(settings, unique, tmp_path):
    settings.METRICS_ENABLED = False
    buffer = LogBuffer(redis_url=None, spool_dir=tmp_path, flush_interval_ms=10_000)
    buffer._database_down_until = float("inf")
    buffer.emit(record(unique))
    asyncio.run(buffer.flush())
    assert value(scrape(), "portico_requests_total", model=unique) is None
