"""OTLP/HTTP trace ingest: GenAI spans from applications instrumented with OpenTelemetry become
Portico logs, through the custom logs' path (analytics.services): the same metadata rules, the
same price table and ``write_log_batch`` (so rollups, filters and pages see them like any log).

A span is GenAI when it names a model or a GenAI system/operation in any of the conventions in
use: the OpenTelemetry GenAI semantic conventions (``gen_ai.*``), OpenLLMetry (``gen_ai.*`` and
the older ``llm.*``) and OpenInference (``llm.model_name``, ``llm.token_count.*``,
``openinference.span.kind``). Other spans (HTTP handlers, database calls, workflow steps) are
ignored and counted.

Metadata goes through ``workspaces.metadata.resolve_metadata`` with the API key's and workspace's
defaults and schemas, in lenient mode (attribute values are typed: numbers and booleans become
strings, over-long values are cut, and the log records what changed), with the sources mapped
onto the gateway's:

- request metadata (``x-portkey-metadata``): span attributes ``portico.metadata.<key>``, then
  ``metadata.<key>``, over OpenInference's ``metadata`` (a JSON object as a string);
- ``_user`` (the body's ``user``): ``user.id``, ``enduser.id`` or ``gen_ai.user``;
- the lowest level (baggage, HEADERS_TO_METADATA): resource attributes ``portico.metadata.<key>``
  / ``metadata.<key>`` (what a whole process sends, like baggage), and the OTLP request's own
  ``baggage`` header and headers named in HEADERS_TO_METADATA (a collector can add them).

A span whose metadata the workspace's schema refuses, or whose times are impossible, is
rejected (OTLP ``partial_success.rejected_spans``, the first reason in ``error_message``); the
other spans of the request are still written. A malformed payload is refused as a whole (400).
Log ids are derived from (workspace, trace id, span id), so an exporter's retry of the same
spans writes nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from django.utils import timezone

from analytics import otel_metrics
from analytics.ingest import write_log_batch
from analytics.logrecord import LogRecord, log_body, log_record
from analytics.otel_decode import OtlpError, SpanIn
from analytics.otel_spans import INGESTED_SDK_VERSION
from analytics.pricing import PriceBook, load_price_book, price_usage
from analytics.usage import FINISH_REASON_LENGTH, MAX_FINISH_REASONS, UsageTracker, token_count
from workspaces.errors import GatewayError
from workspaces.metadata import resolve_metadata
from workspaces.models import ApiKey

# Process-wide counters (spans): accepted, ignored (not GenAI), rejected.
ingest_counters: Counter[str] = Counter()

STATUS_ERROR = 2
_FUTURE_SLACK = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_METADATA_PREFIXES = ("portico.metadata.", "metadata.")
# First present wins.
MODEL_KEYS = (
    "gen_ai.request.model",
    "llm.request.model",
    "llm.model_name",
    "gen_ai.response.model",
    "llm.response.model",
)
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "llm.vendor")
INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
)
TOTAL_TOKEN_KEYS = ("llm.usage.total_tokens", "llm.token_count.total", "gen_ai.usage.total_tokens")
USER_KEYS = ("user.id", "enduser.id", "gen_ai.user", "llm.user")
FINISH_REASON_KEYS = ("gen_ai.response.finish_reasons", "llm.response.finish_reasons", "llm.response.finish_reason")
_OPENLLMETRY_COMPLETION = "gen_ai.completion."  # gen_ai.completion.<n>.finish_reason, one per choice
STATUS_KEYS = ("http.response.status_code", "http.status_code")
_GENAI_MARKERS = (*MODEL_KEYS, *PROVIDER_KEYS, "gen_ai.operation.name")
_OPENINFERENCE_GENAI_KINDS = {"LLM", "EMBEDDING"}
# Operation (gen_ai.operation.name, OpenLLMetry's llm.request.type, OpenInference's span
# kind) -> the gateway's endpoint, so ingested logs group with proxied ones.
ENDPOINTS = {
    "chat": "/chat/completions",
    "LLM": "/chat/completions",
    "text_completion": "/completions",
    "completion": "/completions",
    "embeddings": "/embeddings",
    "embedding": "/embeddings",
    "EMBEDDING": "/embeddings",
}


@dataclass
class IngestResult:
    accepted: int = 0
    ignored: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    log_ids: list[str] = field(default_factory=list)


# --- Spans -> logs ----------------------------------------------------------------------------


def is_genai(span: SpanIn) -> bool:
    attributes = span.attributes
    if any(key in attributes for key in _GENAI_MARKERS):
        return True
    return attributes.get("openinference.span.kind") in _OPENINFERENCE_GENAI_KINDS


def _first(attributes: dict, keys: tuple[str, ...]) -> object:
    for key in keys:
        value = attributes.get(key)
        if value not in (None, ""):
            return value
    return None


def _tokens(attributes: dict, keys: tuple[str, ...]) -> int:
    """The first count among ``keys``; one that is not a count (negative, past the log's
    columns, 1.5, or a doubleValue of Infinity, which int() refused with OverflowError: a
    500) is read as 0, as the gateway reads a provider's usage that is no count."""
    try:
        return token_count(_first(attributes, keys), keys[0])
    except ValueError:
        return 0


def _finish_reasons(attributes: dict) -> list[str] | None:
    """``gen_ai.response.finish_reasons`` (a string array; a single string, or one holding a JSON
    array, is taken too), else OpenLLMetry's per-choice ``gen_ai.completion.<n>.finish_reason``."""
    value = _first(attributes, FINISH_REASON_KEYS)
    if value is None:
        numbered = []
        for key, reason in attributes.items():
            index = key[len(_OPENLLMETRY_COMPLETION) : -len(".finish_reason")]
            if key.startswith(_OPENLLMETRY_COMPLETION) and key.endswith(".finish_reason") and index.isdigit():
                numbered.append((int(index), reason))
        value = [reason for _, reason in sorted(numbered, key=lambda item: item[0])]
    elif isinstance(value, str) and value.startswith("["):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(value)
    items = value if isinstance(value, list) else [value]
    reasons = [str(item)[:FINISH_REASON_LENGTH] for item in items if item not in (None, "")][:MAX_FINISH_REASONS]
    return reasons or None


def _prefixed(attributes: dict) -> dict:
    """``metadata.<key>`` then ``portico.metadata.<key>`` (the more specific wins)."""
    found: dict = {}
    for prefix in reversed(_METADATA_PREFIXES):
        found.update({key[len(prefix) :]: value for key, value in attributes.items() if key.startswith(prefix)})
    return found


def _request_metadata(attributes: dict) -> dict:
    metadata: dict = {}
    raw = attributes.get("metadata")  # OpenInference: a JSON object as a string
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            metadata.update(parsed)
    metadata.update(_prefixed(attributes))
    return metadata


def _log_id(workspace_id: int, span: SpanIn) -> str:
    """A UUIDv7 (time-ordered like the gateway's) whose other bits come from the span's
    identity: the same span sent twice is the same log."""
    digest = hashlib.sha256(f"{workspace_id}:{span.trace_id}:{span.span_id}".encode()).digest()
    raw = bytearray((span.start_ns // 1_000_000).to_bytes(6, "big") + digest[6:16])
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


@dataclass(frozen=True, slots=True)
class _Context:
    api_key: ApiKey
    policy: object
    prices: PriceBook
    store_bodies: bool
    mapped_headers: dict[str, str]
    baggage: str | None
    now: datetime


def _record(span: SpanIn, context: _Context) -> LogRecord:
    """The log record for one GenAI span; raises OtlpError (the span is rejected)."""
    if not span.start_ns or span.end_ns < span.start_ns:
        raise OtlpError("span", f"span {span.span_id}: start and end times are missing or end before start")
    try:
        start = _EPOCH + timedelta(microseconds=span.start_ns // 1000)
    except OverflowError:
        start = datetime.max.replace(tzinfo=UTC)
    if start > context.now + _FUTURE_SLACK:
        raise OtlpError("span", f"span {span.span_id}: starts more than an hour in the future")
    attributes = span.attributes
    user = _first(attributes, USER_KEYS)
    try:
        resolved = resolve_metadata(
            header_value=orjson.dumps(md) if (md := _request_metadata(attributes)) else None,
            body_user=str(user) if user is not None else None,
            mapped_headers={**_prefixed(span.resource), **context.mapped_headers},
            baggage=context.baggage,
            policy=context.policy,
            strict=False,
            request_first=settings.METADATA_PRECEDENCE == "request_first",
            max_keys=settings.METADATA_MAX_KEYS,
        )
    except GatewayError as exc:
        raise OtlpError(
            "span", f"span {span.span_id}: {exc.message.replace('x-portkey-metadata', 'metadata')}"
        ) from None
    model = str(_first(attributes, MODEL_KEYS) or "")[:200]
    prompt, completion = _tokens(attributes, INPUT_TOKEN_KEYS), _tokens(attributes, OUTPUT_TOKEN_KEYS)
    total = _tokens(attributes, TOTAL_TOKEN_KEYS) or prompt + completion
    http_status = _first(attributes, STATUS_KEYS)
    failed = span.status_code == STATUS_ERROR
    if isinstance(http_status, int) and not isinstance(http_status, bool) and 100 <= http_status <= 599:
        status = http_status
    else:
        status = 500 if failed else 200
    operation = _first(attributes, ("gen_ai.operation.name", "llm.request.type", "openinference.span.kind"))
    stream = _first(attributes, ("gen_ai.request.stream", "llm.is_streaming"))
    error = span.status_message or span.exception or str(attributes.get("error.type") or "")
    provider = str(_first(attributes, PROVIDER_KEYS) or "unknown")[:64]
    usage = UsageTracker()
    usage.prompt_tokens, usage.completion_tokens, usage.total_tokens = prompt, completion, total
    usage.finish_reasons = _finish_reasons(attributes) or []
    workspace_id = context.api_key.workspace_id
    cost, price_version = price_usage(context.prices, workspace_id, provider, model, usage) if total else (None, "")
    record = log_record(
        id=_log_id(workspace_id, span),
        created_at=start.isoformat(),
        workspace_id=workspace_id,
        status_code=status,
        usage=usage,
        metadata=resolved.metadata,
        error_message=error if failed or status >= 400 else "",
        success=not failed and status < 400,  # a span marked failed is a failure at any status
        api_key_id=context.api_key.pk,
        provider=provider,
        model=model,
        endpoint=ENDPOINTS.get(str(operation), f"/{operation}" if operation else "")[:200],
        method="POST",
        is_stream=stream is True or stream == "true",
        latency_ms=round((span.end_ns - span.start_ns) / 1e6, 3),
        cost=None if cost is None else str(cost),
        price_version=price_version,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        span_name=span.name[:200],
        metadata_changes=resolved.changes,
        client_runtime=str(span.resource.get("telemetry.sdk.language") or "")[:64],
        sdk_version=INGESTED_SDK_VERSION,
    )
    if context.store_bodies:
        # The span's attributes carry the prompt and completion (gen_ai.prompt.*, input.value, ...).
        record["body"] = log_body({}, orjson.dumps(attributes, default=str).decode(), "")
    return record


def ingest_spans(*, api_key: ApiKey, spans: list[SpanIn], headers: dict[str, str]) -> IngestResult:
    """Write the GenAI spans among ``spans`` as logs of ``api_key``'s workspace."""
    result = IngestResult()
    context = _Context(
        api_key=api_key,
        policy=api_key.metadata_policy(),
        prices=load_price_book(),
        store_bodies=api_key.workspace.store_bodies,
        mapped_headers={h: headers[h] for h in settings.HEADERS_TO_METADATA if h in headers},
        baggage=headers.get("baggage"),
        now=timezone.now(),
    )
    records = []
    for span in spans:
        if not is_genai(span):
            result.ignored += 1
            continue
        try:
            records.append(_record(span, context))
        except OtlpError as exc:
            result.rejected += 1
            result.reasons.append(str(exc))
    if records:
        write_log_batch(records)
    result.accepted = len(records)
    result.log_ids = [record["id"] for record in records]
    for name in ("accepted", "ignored", "rejected"):
        ingest_counters[name] += getattr(result, name)
        otel_metrics.count("ingest", name, getattr(result, name))
    return result
