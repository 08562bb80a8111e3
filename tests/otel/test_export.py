"""Each stored log becomes a span on its workspace's OTLP/HTTP collector, decoded here with
opentelemetry-proto: GenAI attributes, metadata, ids, times, status; and the collector's
outages never block or lose a log write."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analytics import otel_export, otel_proto
from analytics.ingest import write_log_batch
from analytics.models import RequestLog
from gateway.auth import key_cache, provider_cache
from tests.analytics.records import log_record
from tests.monitoring.conftest import scrape, value
from tests.otel.conftest import attributes, wait_for
from workspaces import services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ws():
    return services.workspace_create(slug="acme", name="Acme")


@pytest.fixture
def exporting(ws, receiver, exporter):
    """``ws`` exports to ``receiver`` with a secret header."""
    services.otel_export_update(workspace=ws, endpoint=receiver.url, headers={"x-collector-token": "s3cret"})
    return ws


def write(ws, **overrides) -> dict:
    record = log_record(ws, **overrides)
    assert write_log_batch([record]) == [record["id"]]
    return record


def test_a_logged_request_becomes_a_genai_span(exporting, receiver, exporter):
    started = datetime(2026, 12, 1, 12, 0, 0, 250000, tzinfo=UTC)
    record = write(
        exporting,
        created_at=started.isoformat(),
        latency_ms=1500.0,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        metadata={"_user": "alice", "environment": "production", "feature": "chat"},
        finish_reasons=["stop", "length"],
    )
    wait_for(lambda: receiver.spans())
    assert exporter.flush()
    [span] = receiver.spans()
    attrs = attributes(span)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (120, 48)
    assert attrs["gen_ai.response.finish_reasons"] == ["stop", "length"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["portico.cost"] == pytest.approx(0.0000468)
    assert attrs["portico.log_id"] == record["id"]
    assert attrs["portico.metadata.environment"] == "production"
    assert attrs["portico.metadata.feature"] == "chat"
    assert attrs["portico.metadata._user"] == attrs["enduser.id"] == "alice"
    # The W3C ids the request carried: same trace, and this span is a child of the caller's.
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"
    assert span.span_id.hex() != "00f067aa0ba902b7" and len(span.span_id) == 8
    assert "portico.trace_id" not in attrs
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == span.SPAN_KIND_CLIENT
    assert span.start_time_unix_nano == int(started.timestamp()) * 10**9 + 250_000_000
    assert span.end_time_unix_nano - span.start_time_unix_nano == 1_500_000_000
    assert span.status.code == span.status.STATUS_CODE_UNSET
    [request] = receiver.requests
    resource = attributes(request.resource_spans[0].resource)
    assert resource == {"service.name": "portico", "portico.workspace": "acme"}
    assert receiver.headers[0]["x-collector-token"] == "s3cret"
    assert receiver.headers[0]["content-type"] == "application/x-protobuf"


def test_a_failed_request_is_an_error_span(exporting, receiver, exporter):
    write(exporting, status_code=502, success=False, error_message="upstream timed out", cost=None)
    wait_for(lambda: receiver.spans())
    [span] = receiver.spans()
    attrs = attributes(span)
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert span.status.message == "upstream timed out"
    assert attrs["http.response.status_code"] == 502
    assert attrs["error.type"] == "502"
    assert "portico.cost" not in attrs  # unknown price: no cost, not 0
    assert "gen_ai.response.finish_reasons" not in attrs  # the log has none


def test_a_config_routed_cache_hit_names_its_config_target_and_saving(exporting, receiver, exporter):
    attempts = [{"target": "config.targets[1]", "provider": "@backup", "status": 200, "ms": 0.4, "cache": "HIT"}]
    write(
        exporting,
        config_id="pc-0123456789abcdef",
        last_used_option_index="config.targets[1]",
        attempts=attempts,
        cache_status="HIT",
        cost="0",
        cache_saved_cost="0.00004680",
    )
    wait_for(lambda: receiver.spans())
    attrs = attributes(receiver.spans()[0])
    assert (attrs["portico.config_id"], attrs["portico.last_used_option_index"]) == (
        "pc-0123456789abcdef",
        "config.targets[1]",
    )
    assert (attrs["portico.attempts"], attrs["portico.cache_status"], attrs["portico.cost"]) == (1, "HIT", 0)
    assert attrs["portico.cache_saved_cost"] == pytest.approx(0.0000468)


def test_portkey_trace_ids_map_to_stable_otel_ids(exporting, receiver, exporter):
    write(exporting, trace_id="checkout-flow-42", span_id="step-1", parent_span_id="root", span_name="answer")
    write(exporting, trace_id="checkout-flow-42", span_id="step-2", parent_span_id="step-1")
    wait_for(lambda: len(receiver.spans()) == 2)
    first, second = sorted(receiver.spans(), key=lambda s: attributes(s)["portico.span_id"])
    expected_trace = hashlib.sha256(b"checkout-flow-42").digest()[:16]
    assert first.trace_id == second.trace_id == expected_trace
    assert attributes(first)["portico.trace_id"] == "checkout-flow-42"
    # x-portkey-span-id is the span's own id when a parent is named: the two link up.
    assert second.parent_span_id == first.span_id
    assert first.name == "answer"


def test_generated_uuid_trace_ids_keep_their_bytes(exporting, receiver, exporter):
    trace = str(uuid.uuid4())
    write(exporting, trace_id=trace)
    wait_for(lambda: receiver.spans())
    assert receiver.spans()[0].trace_id == uuid.UUID(trace).bytes
    assert not receiver.spans()[0].parent_span_id


def test_other_workspaces_and_disabled_exports_send_nothing(exporting, receiver, exporter):
    other = services.workspace_create(slug="other", name="Other")
    write(other)
    write(exporting)
    wait_for(lambda: receiver.spans())
    assert exporter.flush()
    assert [attributes(s)["portico.log_id"] for s in receiver.spans()] != []
    assert len(receiver.spans()) == 1
    services.otel_export_update(workspace=exporting, enabled=False)
    exporter.refresh_soon()
    time.sleep(0.5)
    write(exporting)
    assert exporter.flush()
    time.sleep(0.3)
    assert len(receiver.spans()) == 1


def test_a_redelivered_batch_exports_nothing_twice(exporting, receiver, exporter):
    record = log_record(exporting)
    write_log_batch([record])
    wait_for(lambda: receiver.spans())
    assert write_log_batch([record]) == []  # a duplicate: nothing inserted, nothing exported
    assert exporter.flush()
    time.sleep(0.2)
    assert len(receiver.spans()) == 1


def test_the_collector_down_then_up_loses_no_log_and_delivers_after_recovery(exporting, receiver, exporter, settings):
    settings.OTEL_EXPORT_RETRY_SECONDS = 20
    receiver.stop()
    records = [log_record(exporting) for _ in range(50)]
    started = time.monotonic()
    for start in range(0, 50, 10):
        assert len(write_log_batch(records[start : start + 10])) == 10
    assert time.monotonic() - started < 5  # the writer never waited on the collector
    assert RequestLog.objects.filter(workspace=exporting).count() == 50
    wait_for(lambda: otel_export.export_counters["retries"] > 0)
    receiver.start()
    wait_for(lambda: len(receiver.spans()) == 50, timeout=20)
    assert {attributes(s)["portico.log_id"] for s in receiver.spans()} == {r["id"] for r in records}


def counted(name: str, **labels: str) -> float:
    """A counter of /metrics as a scrape has it (0 before its first increment)."""
    return value(scrape(), name, **labels) or 0


def test_a_failing_collector_drops_and_counts_after_the_retry_budget(
    metrics_on, exporting, receiver, exporter, settings
):
    settings.OTEL_EXPORT_RETRY_SECONDS = 0.5
    receiver.status = 503
    before = otel_export.export_counters["dropped_failed"]
    scraped = counted("portico_otel_export_spans_total", result="dropped_failed")
    retries = counted("portico_otel_export_retries_total")
    write_log_batch([log_record(exporting) for _ in range(5)])
    wait_for(lambda: otel_export.export_counters["dropped_failed"] - before == 5)
    assert RequestLog.objects.filter(workspace=exporting).count() == 5
    # Visible where operators look: /metrics.
    assert counted("portico_otel_export_spans_total", result="dropped_failed") - scraped == 5
    assert counted("portico_otel_export_retries_total") > retries


def test_a_500_is_not_retried_and_is_counted(metrics_on, exporting, receiver, exporter):
    receiver.status = 500
    before = otel_export.export_counters["rejected"]
    scraped = counted("portico_otel_export_spans_total", result="rejected")
    write_log_batch([log_record(exporting) for _ in range(3)])
    wait_for(lambda: otel_export.export_counters["rejected"] - before == 3)
    assert RequestLog.objects.filter(workspace=exporting).count() == 3
    assert counted("portico_otel_export_spans_total", result="rejected") - scraped == 3
    receiver.status = 200
    exported = counted("portico_otel_export_spans_total", result="exported")
    write(exporting)
    wait_for(lambda: counted("portico_otel_export_spans_total", result="exported") - exported == 1)


def test_a_slow_collector_does_not_slow_the_writer(exporting, receiver, exporter, settings):
    # A writer that waited on the export would take at least the 1 s timeout per write (3 s for
    # three); one that does not takes a small fraction of it, even on a busy machine.
    settings.OTEL_EXPORT_TIMEOUT = 1.0
    receiver.delay = 3.0
    write(exporting)  # the export of this one hangs in the background
    time.sleep(0.1)
    started = time.monotonic()
    for _ in range(3):
        write(exporting)
    assert time.monotonic() - started < 2.5
    assert RequestLog.objects.filter(workspace=exporting).count() == 4


def test_a_full_queue_drops_the_oldest_and_counts_them(exporting, receiver, exporter, settings):
    settings.OTEL_EXPORT_QUEUE_SIZE = 100
    settings.OTEL_EXPORT_RETRY_SECONDS = 30
    receiver.stop()
    write(exporting)  # loads the targets; its export then waits on the dead collector
    wait_for(lambda: otel_export.export_counters["retries"] > 0)
    before = otel_export.export_counters["dropped_queue_full"]
    records = [log_record(exporting) for _ in range(300)]
    write_log_batch(records)
    wait_for(lambda: otel_export.export_counters["dropped_queue_full"] - before >= 200)
    assert RequestLog.objects.filter(workspace=exporting).count() == 301
    receiver.start()
    # What is left is the newest: the last 100 of the 300.
    wait_for(lambda: {r["id"] for r in records[-100:]} <= {attributes(s)["portico.log_id"] for s in receiver.spans()})


def test_redirects_are_not_followed(exporting, receiver, exporter):
    receiver.status = 307
    receiver.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data"}
    before = otel_export.export_counters["rejected"]
    write(exporting)
    wait_for(lambda: otel_export.export_counters["rejected"] - before == 1)


def test_names_resolving_to_blocked_networks_are_refused(exporting, receiver, exporter, settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []
    # "localhost" is a name (not an IP literal): refused at connect time by the resolver check.
    services.otel_export_update(workspace=exporting, endpoint=receiver.url.replace("127.0.0.1", "localhost"))
    exporter.refresh_soon()
    before = otel_export.export_counters["rejected"]
    write(exporting)
    wait_for(lambda: otel_export.export_counters["rejected"] - before == 1)
    assert receiver.requests == []


def test_the_encoding_decodes_with_opentelemetry_proto():
    span = otel_proto.span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        parent_span_id=None,
        name="ünïcode",
        start_ns=1,
        end_ns=2**63,
        attributes=[
            otel_proto.int_attribute("negative", -5),
            otel_proto.int_attribute("big", 2**40),
            otel_proto.double_attribute("cost", 0.25),
            otel_proto.bool_attribute("stream", True),
            otel_proto.string_attribute("long", "x" * 300),
            otel_proto.string_array_attribute("reasons", ["stop", "length"]),
        ],
        status_code=otel_proto.STATUS_ERROR,
        status_message="boom",
    )
    body = otel_proto.export_request(
        resource_attributes=[("service.name", "portico")], scope_name="portico", scope_version="1", spans=[span]
    )
    decoded = ExportTraceServiceRequest.FromString(body)
    [out] = decoded.resource_spans[0].scope_spans[0].spans
    assert decoded.resource_spans[0].scope_spans[0].scope.name == "portico"
    assert (out.name, out.start_time_unix_nano, out.end_time_unix_nano) == ("ünïcode", 1, 2**63)
    assert attributes(out) == {
        "negative": -5,
        "big": 2**40,
        "cost": 0.25,
        "stream": True,
        "long": "x" * 300,
        "reasons": ["stop", "length"],
    }
    assert (out.status.code, out.status.message) == (2, "boom")


def test_a_request_through_the_gateway_reaches_the_collector_as_a_span(ws, gateway_url, upstream, receiver, exporter):
    """End to end: the gateway logs a request, the writer stores it, its span reaches the
    collector with what the request and the provider's answer said."""
    key_cache.clear()
    provider_cache.clear()
    _, key = services.api_key_create(workspace=ws, name="ci")
    services.provider_create(workspace=ws, slug="mock", base_url=upstream.base_url, api_key="sk-provider")
    services.otel_export_update(workspace=ws, endpoint=receiver.url)
    headers = {
        "x-portkey-api-key": key,
        "x-portkey-provider": "@mock",
        "x-portkey-metadata": '{"environment": "production"}',
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", gateway_url + "/v1/chat/completions", json=body, headers=headers, timeout=10) as answer:
        assert answer.status_code == 200
        answer.read()
    wait_for(lambda: receiver.spans(), timeout=15)
    [span] = receiver.spans()
    attrs = attributes(span)
    assert attrs["portico.log_id"] == answer.headers["x-portico-log-id"]
    assert attrs["gen_ai.response.finish_reasons"] == ["length"]  # the mock stopped at max_tokens
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (4, 3)
    assert (attrs["gen_ai.request.model"], attrs["portico.metadata.environment"]) == ("gpt-4o-mini", "production")
    assert attrs["portico.stream"] is True
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"
