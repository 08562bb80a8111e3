"""POST /v1/otel/v1/traces on a live Portico (a real HTTP server: pytest-django's live_server):
GenAI spans from an application instrumented with the OpenTelemetry SDK become logs, read back
through the REST API. (Not the gateway tests' uvicorn server: a second server in the same run
would share the gateway app across two event loops. config.asgi's routing of /v1/otel/ to
Django is checked directly.)"""

from __future__ import annotations

import gzip
import time
from decimal import Decimal

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from analytics.models import ModelPrice, RequestLog
from config.asgi import routes_to_gateway
from tests.monitoring.conftest import scrape, value
from workspaces import services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live(live_server):
    ModelPrice.objects.update_or_create(
        model="gpt-4o-mini", defaults={"input_per_million": Decimal("0.15"), "output_per_million": Decimal("0.6")}
    )
    ws = services.workspace_create(slug="acme", name="Acme", default_metadata={"tenant": "acme-corp"})
    api_key, full_key = services.api_key_create(workspace=ws, name="otel", default_metadata={"source": "otel-app"})
    return type("Live", (), {"url": live_server.url, "workspace": ws, "api_key": api_key, "key": full_key})


def tracer_for(live, resource: dict | None = None):
    exporter = OTLPSpanExporter(endpoint=f"{live.url}/v1/otel/v1/traces", headers={"x-portkey-api-key": live.key})
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot", **(resource or {})}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("tests.otel")


def rest_logs(live, **params) -> list[dict]:
    response = httpx.get(f"{live.url}/api/v1/logs", params=params, headers={"x-portkey-api-key": live.key}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def post(live, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}/v1/otel/v1/traces",
        content=body,
        headers={"content-type": content_type, "x-portkey-api-key": live.key, **headers},
        timeout=10,
    )


COUNTED = ("accepted", "ignored")  # /metrics' ingest counters


def test_sdk_genai_spans_become_logs_with_tokens_cost_metadata_and_trace(live):
    provider, tracer = tracer_for(live, {"portico.metadata.environment": "staging", "telemetry.sdk.language": "python"})
    with tracer.start_as_current_span("workflow") as parent:  # not GenAI: ignored
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            span.set_attribute("gen_ai.usage.input_tokens", 1000)
            span.set_attribute("gen_ai.usage.output_tokens", 500)
            span.set_attribute("gen_ai.response.finish_reasons", ["stop", "length"])
            span.set_attribute("portico.metadata.feature", "search")
            span.set_attribute("metadata.team", "growth")
            span.set_attribute("portico.metadata.priority", 3)  # typed: made a string
            span.set_attribute("user.id", "carol")
            time.sleep(0.02)
        trace_id = format(parent.get_span_context().trace_id, "032x")
        span_id = format(span.get_span_context().span_id, "016x")
    provider.shutdown()

    [log] = rest_logs(live)
    assert (log["provider"], log["model"], log["endpoint"]) == ("openai", "gpt-4o-mini", "/chat/completions")
    assert (log["prompt_tokens"], log["completion_tokens"], log["total_tokens"]) == (1000, 500, 1500)
    assert log["cost"] == pytest.approx(0.00045)
    assert (log["trace_id"], log["span_id"], log["span_name"]) == (trace_id, span_id, "chat gpt-4o-mini")
    assert log["parent_span_id"] == format(parent.get_span_context().span_id, "016x")
    assert (log["status_code"], log["success"]) == (200, True)
    assert log["finish_reasons"] == ["stop", "length"]
    assert log["latency_ms"] >= 20
    assert log["user"] == "carol"
    assert log["metadata"] == {
        "environment": "staging",  # resource attribute: the lowest level
        "feature": "search",
        "team": "growth",
        "priority": "3",
        "_user": "carol",
        "source": "otel-app",  # key default
        "tenant": "acme-corp",  # workspace default
    }
    # Filters and rollups see it like any log.
    assert [row["id"] for row in rest_logs(live, **{"metadata.feature": "search"})] == [log["id"]]
    stored = RequestLog.objects.get(id=log["id"])
    assert stored.sdk_version == "otlp" and stored.client_runtime == "python"
    assert any("converted 'priority'" in change for change in stored.metadata_changes)


def test_openinference_and_openllmetry_attributes_and_errors(live):
    provider, tracer = tracer_for(live)
    with tracer.start_as_current_span("ChatCompletion") as span:
        span.set_attribute("openinference.span.kind", "LLM")
        span.set_attribute("llm.model_name", "gpt-4o-mini")
        span.set_attribute("llm.provider", "openai")
        span.set_attribute("llm.token_count.prompt", 10)
        span.set_attribute("llm.token_count.completion", 4)
        span.set_attribute("metadata", '{"feature": "faq"}')
    with tracer.start_as_current_span("openai.chat") as span:
        span.set_attribute("gen_ai.system", "anthropic")
        span.set_attribute("gen_ai.request.model", "claude-unpriced")
        span.set_attribute("llm.request.type", "chat")
        span.set_attribute("gen_ai.usage.prompt_tokens", 7)
        span.set_attribute("gen_ai.usage.completion_tokens", 2)
        span.set_attribute("http.response.status_code", 429)
        span.set_attribute("gen_ai.completion.1.finish_reason", "length")  # OpenLLMetry: one per choice
        span.set_attribute("gen_ai.completion.0.finish_reason", "stop")
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
    provider.shutdown()

    logs = {log["provider"]: log for log in rest_logs(live)}
    inference = logs["openai"]
    assert (inference["model"], inference["prompt_tokens"], inference["completion_tokens"]) == ("gpt-4o-mini", 10, 4)
    assert inference["metadata"]["feature"] == "faq"
    assert inference["finish_reasons"] is None  # the span named none
    assert inference["cost"] == pytest.approx((10 * 0.15 + 4 * 0.6) / 1e6)
    failed = logs["anthropic"]
    assert (failed["status_code"], failed["success"], failed["cost"]) == (429, False, None)  # unknown price: null
    assert failed["finish_reasons"] == ["stop", "length"]
    assert RequestLog.objects.get(id=failed["id"]).error_message == "rate limited"


def test_json_encoding_is_accepted_and_answers_in_json(live, metrics_on):
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "embeddings text-embedding-3-small",
        "startTimeUnixNano": str(time.time_ns() - 50_000_000),
        "endTimeUnixNano": str(time.time_ns()),
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "embeddings"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "text-embedding-3-small"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
            {"key": "portico.metadata.feature", "value": {"stringValue": "index"}},
        ],
        "status": {"code": 1},
    }
    plain = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "aaa19b7ec3c1b174", "name": "GET /"}
    document = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span, plain]}]}]}
    before = {result: value(scrape(), "portico_otel_ingest_spans_total", result=result) or 0 for result in COUNTED}
    response = post(live, orjson.dumps(document), "application/json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["portico"]["accepted"] == 1 and body["portico"]["ignored"] == 1
    assert "1 span(s) without GenAI attributes ignored" in body["partialSuccess"]["errorMessage"]
    assert body["partialSuccess"]["rejectedSpans"] == 0
    after = {result: value(scrape(), "portico_otel_ingest_spans_total", result=result) or 0 for result in COUNTED}
    assert {result: after[result] - before[result] for result in COUNTED} == {"accepted": 1, "ignored": 1}
    [log] = rest_logs(live)
    assert (log["endpoint"], log["model"], log["prompt_tokens"]) == ("/embeddings", "text-embedding-3-small", 12)
    assert log["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert 45 <= log["latency_ms"] <= 55
    # An exporter's retry of the same span writes nothing twice.
    assert post(live, orjson.dumps(document), "application/json").status_code == 200
    assert len(rest_logs(live)) == 1


def test_gzip_protobuf_from_a_collector_and_non_genai_spans_ignored(live):
    provider, tracer = tracer_for(live)
    with tracer.start_as_current_span("db.query"):
        pass
    provider.shutdown()
    assert rest_logs(live) == []  # a non-GenAI span is not a log
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "chat"
    span.start_time_unix_nano, span.end_time_unix_nano = time.time_ns() - 10**9, time.time_ns()
    kv = span.attributes.add()
    kv.key, kv.value.string_value = "gen_ai.request.model", "gpt-4o-mini"
    body = gzip.compress(request.SerializeToString())
    # A collector's baggage header: the lowest level of metadata, as on the gateway.
    baggage = {"baggage": "team=platform,tenant=ignored;p=1"}
    response = post(live, body, "application/x-protobuf", **{"content-encoding": "gzip"}, **baggage)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 0
    assert response.headers["x-portico-spans-accepted"] == "1"
    [log] = rest_logs(live)
    assert log["metadata"]["team"] == "platform"
    assert log["metadata"]["tenant"] == "acme-corp"  # the workspace's default wins over baggage


def test_spans_the_schema_refuses_are_rejected_others_written(live):
    services.workspace_update(
        workspace=live.workspace,
        metadata_schema={"type": "object", "properties": {"team": {"type": "string"}}, "required": ["team"]},
    )
    now = time.time_ns()

    def span(span_id: str, **attrs: str) -> dict:
        attributes = [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}}]
        attributes += [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
        return {
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "spanId": span_id,
            "startTimeUnixNano": now - 10**6,
            "endTimeUnixNano": now,
            "attributes": attributes,
        }

    document = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [span("b7ad6b7169203331", **{"metadata.team": "x"}), span("c7ad6b7169203331")]}]}
        ]
    }
    response = post(live, orjson.dumps(document), "application/json")
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == 1 and "team" in partial["errorMessage"]
    assert [log["span_id"] for log in rest_logs(live)] == ["b7ad6b7169203331"]


@pytest.mark.parametrize(
    ("body", "content_type", "param"),
    [
        (b"{not json", "application/json", "body"),
        (b"[]", "application/json", "body"),
        (b'{"resourceSpans": {}}', "application/json", "body.resourceSpans"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "AAEC", "spanId": "0102030405060708"}]}]}]}',
            "application/json",
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c",'
            b' "spanId": "0102030405060708", "startTimeUnixNano": "soon"}]}]}]}',
            "application/json",
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano",
        ),
        (b"\xff\xff\xff\xff", "application/x-protobuf", "body"),
        # Negative times were a 500 (the log id's 6-byte time could not hold them).
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c",'
            b' "spanId": "0102030405060708", "startTimeUnixNano": "-1", "endTimeUnixNano": "5",'
            b' "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}]}]}]}',
            "application/json",
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c",'
            b' "spanId": "0102030405060708", "startTimeUnixNano": "' + b"9" * 5000 + b'"}]}]}]}',
            "application/json",
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano",
        ),
    ],
)
def test_bad_payloads_are_a_400_naming_what_is_wrong(live, body, content_type, param):
    response = post(live, body, content_type)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_it_refuses_missing_keys_wrong_types_and_oversized_bodies(live, settings):
    url = f"{live.url}/v1/otel/v1/traces"
    assert httpx.post(url, content=b"{}", headers={"content-type": "application/json"}).status_code == 401
    bad_key = {"content-type": "application/json", "authorization": "Bearer pk-" + "x" * 48}
    assert httpx.post(url, content=b"{}", headers=bad_key).status_code == 401
    response = post(live, b"{}", "text/plain")
    assert response.status_code == 415 and response.json()["error"]["param"] == "Content-Type"
    bearer = {"content-type": "application/json", "authorization": f"Bearer {live.key}"}
    assert httpx.post(url, content=b"{}", headers=bearer).status_code == 200
    settings.OTEL_INGEST_MAX_BYTES = 2048
    assert post(live, b" " * 4096, "application/json").status_code == 413
    bomb = gzip.compress(b" " * 100_000)
    assert post(live, bomb, "application/json", **{"content-encoding": "gzip"}).status_code == 413
    _, readonly_key = services.api_key_create(workspace=live.workspace, name="admin only", scopes=["admin"])
    forbidden = {"content-type": "application/json", "x-portkey-api-key": readonly_key}
    assert httpx.post(url, content=b"{}", headers=forbidden).status_code == 403


def test_asgi_sends_otlp_ingest_to_django_not_the_gateway():
    assert not routes_to_gateway("/v1/otel/v1/traces")
    assert routes_to_gateway("/v1/chat/completions")


@pytest.mark.parametrize("count", [{"doubleValue": "Infinity"}, {"doubleValue": -3}, {"intValue": "-7"}])
def test_a_token_count_that_is_no_count_is_logged_as_zero(live, count):
    """A doubleValue of Infinity made int() raise OverflowError: the whole payload was a 500."""
    now = time.time_ns()
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "startTimeUnixNano": now - 10**6,
        "endTimeUnixNano": now,
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.usage.input_tokens", "value": count},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "4"}},
        ],
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    response = post(live, orjson.dumps(document), "application/json")
    assert response.status_code == 200, response.text
    [log] = rest_logs(live)
    assert (log["prompt_tokens"], log["completion_tokens"]) == (0, 4)
