"""The exporter's batch encoding (analytics.otel_spans.encode_spans) writes the same bytes as
encoding each log's span on its own (encode_span, the one the README's table describes), and
the request around them decodes with opentelemetry-proto."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analytics import log_rows, otel_export, otel_proto
from analytics.otel_spans import encode_span, encode_spans
from tests.analytics.records import log_record
from tests.otel.conftest import attributes
from workspaces import services

pytestmark = pytest.mark.django_db


def rows_of(records: list[dict]) -> list[dict]:
    rows, _bodies, _json_texts, malformed = log_rows.prepare(records)
    assert malformed == 0
    return rows


def varied_records(ws) -> list[dict]:
    started = datetime(2026, 12, 1, 12, 0, 0, 250000, tzinfo=UTC)
    return [
        log_record(ws),
        log_record(ws, trace_id=str(uuid.uuid4()), is_stream=True, ttft_ms=80.5, finish_reasons=["stop"]),
        log_record(ws, trace_id="", user="", metadata={}, cost=None, created_at=started.isoformat()),
        log_record(ws, trace_id="checkout-flow-42", finish_reasons=["stop", "length"], prompt_tokens=20_000),
        log_record(ws, trace_id="4BF92F3577B34DA6A3CE929D0E0E4736", completion_tokens=0, currency="EUR"),
        log_record(ws, status_code=502, success=False, error_message="upstream timed out", cost=None),
        log_record(ws, status_code=429, success=False, error_message="", span_name="answer", model=""),
        log_record(ws, trace_id="t-1", span_id="step-1", parent_span_id="root", retry_count=2),
        log_record(ws, metadata={"_user": "bob", "team": "ml", "n": "1" * 128}, endpoint="/v1/embeddings"),
        log_record(ws, cache_status="HIT", cost="0", cache_saved_cost="0.00004680"),
        log_record(ws, latency_ms=0.0, provider="anthropic", model="claude-3-5-haiku", user="ünïcode ✓"),
    ]


def test_a_batch_encodes_to_the_same_bytes_as_each_span_alone():
    ws = services.workspace_create(slug="acme", name="Acme")
    rows = rows_of(varied_records(ws) * 2)  # the second time from the caches

    assert b"".join(encode_spans(rows)) == b"".join(otel_proto.span_field(encode_span(row)) for row in rows)


def test_the_framed_request_decodes_with_opentelemetry_proto():
    ws = services.workspace_create(slug="acme", name="Acme")
    rows = rows_of(varied_records(ws))
    resource = [("service.name", "portico"), ("portico.workspace", "acme")]

    body = otel_proto.framed_export_request(
        resource_attributes=resource, scope_name="portico", scope_version="1", framed_spans=encode_spans(rows)
    )

    assert body == otel_proto.export_request(
        resource_attributes=resource, scope_name="portico", scope_version="1", spans=[encode_span(r) for r in rows]
    )
    [resource_spans] = ExportTraceServiceRequest.FromString(body).resource_spans
    [scope_spans] = resource_spans.scope_spans
    assert [attributes(span)["portico.log_id"] for span in scope_spans.spans] == [str(r["id"]) for r in rows]
    assert scope_spans.spans[5].status.message == "upstream timed out"


def test_a_row_that_cannot_be_encoded_is_counted_and_only_it_is_left_out():
    ws = services.workspace_create(slug="acme", name="Acme")
    rows = rows_of([log_record(ws) for _ in range(3)])
    rows[1] = {**rows[1], "latency_ms": None}  # not a number: encode_span raises too
    before = otel_export.export_counters["unencodable"]

    spans, count = otel_export._encode(rows)

    assert count == 2
    assert spans == [otel_proto.span_field(encode_span(row)) for row in (rows[0], rows[2])]
    assert otel_export.export_counters["unencodable"] == before + 1
