"""POST /v1/otel/v1/traces: OTLP/HTTP trace ingest (protobuf or JSON, optionally gzip), with a
workspace API key as on the gateway (``x-portkey-api-key`` or ``Authorization: Bearer pk-...``).

The answer is OTLP's ExportTraceServiceResponse in the request's encoding: ``partial_success``
counts the rejected spans (the first reasons in ``error_message``); it also notes ignored
non-GenAI spans. The ``x-portico-spans-accepted`` / ``-ignored`` / ``-rejected`` headers carry
the three counts in both encodings (OTLP's response has no field for the first two), and the
JSON answer repeats them under ``portico``. Errors use the REST API's JSON shape
(``{"error": {"message", "type", "param", "code"}}``) whatever the request's encoding: OTLP
exporters log the body as text.
"""

from __future__ import annotations

import zlib

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from analytics import otel_decode, otel_ingest
from analytics.authentication import key_from_headers
from workspaces import services
from workspaces.models import ApiKey

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> HttpResponse:
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    response = HttpResponse(orjson.dumps(body), status=status, content_type=JSON)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="portico"'
    return response


def _read_body(request: HttpRequest, limit: int) -> bytes | HttpResponse:
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = _error(413, f"The body is larger than {limit} bytes (OTEL_INGEST_MAX_BYTES).", code="body_too_large")
    if declared > limit:
        return too_large
    body = request.read(limit + 1)
    if len(body) > limit:
        return too_large
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        return _error(
            415, f"Content-Encoding {encoding!r} is not supported; send gzip or none.", param="Content-Encoding"
        )
    # Bounded decompression: a small bomb must not become gigabytes in memory.
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        return _error(400, f"The body is not valid {encoding}: {exc}.", param="Content-Encoding")
    if len(inflated) > limit or inflater.unconsumed_tail:
        return too_large
    return inflated


def _authenticate(request: HttpRequest) -> ApiKey | HttpResponse:
    full_key = key_from_headers(request)
    if full_key is None:
        return _error(401, "Send a workspace API key in x-portkey-api-key or Authorization: Bearer pk-....")
    api_key = services.api_key_authenticate(full_key)
    if api_key is None:
        return _error(401, "Invalid API key: it is unknown, revoked or expired.")
    if not (api_key.has_scope(ApiKey.Scope.INFERENCE) or api_key.has_scope(ApiKey.Scope.LOGS_READ)):
        return _error(403, "This API key needs the inference or the logs.read scope.")
    return api_key


@csrf_exempt  # API-key authenticated, never a browser session
def traces(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "Use POST with an OTLP ExportTraceServiceRequest.")
        response["Allow"] = "POST"
        return response
    api_key = _authenticate(request)
    if isinstance(api_key, HttpResponse):
        return api_key
    content_type = request.content_type.lower()
    if content_type not in (PROTOBUF, JSON):
        return _error(
            415, f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type or 'missing'!r}.", param="Content-Type"
        )
    body = _read_body(request, settings.OTEL_INGEST_MAX_BYTES)
    if isinstance(body, HttpResponse):
        return body
    try:
        spans = otel_decode.decode_protobuf(body) if content_type == PROTOBUF else otel_decode.decode_json(body)
    except otel_decode.OtlpError as exc:
        return _error(400, str(exc), param=exc.param, code="invalid_otlp")
    result = otel_ingest.ingest_spans(
        api_key=api_key, spans=spans, headers={k.lower(): v for k, v in request.headers.items()}
    )
    return _answer(result, content_type)


def _answer(result: otel_ingest.IngestResult, content_type: str) -> HttpResponse:
    notes = result.reasons[:3]
    if len(result.reasons) > 3:
        notes.append(f"and {len(result.reasons) - 3} more")
    if result.ignored:
        notes.append(f"{result.ignored} span(s) without GenAI attributes ignored")
    message = "; ".join(notes)
    if content_type == PROTOBUF:
        answer = ExportTraceServiceResponse()
        if result.rejected or message:
            answer.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=message)
            )
        response = HttpResponse(answer.SerializeToString(), content_type=PROTOBUF)
    else:
        body: dict = {}
        if result.rejected or message:
            body["partialSuccess"] = {"rejectedSpans": result.rejected, "errorMessage": message}
        body["portico"] = {
            "accepted": result.accepted,
            "ignored": result.ignored,
            "rejected": result.rejected,
            "logIds": result.log_ids,
        }
        response = HttpResponse(orjson.dumps(body), content_type=JSON)
    response["x-portico-spans-accepted"] = str(result.accepted)
    response["x-portico-spans-ignored"] = str(result.ignored)
    response["x-portico-spans-rejected"] = str(result.rejected)
    return response
