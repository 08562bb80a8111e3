"""Writes from the analytics API: Portkey's custom log insert (POST /v1/logs) and feedback
(POST /v1/feedback).

Custom logs take the gateway's path from metadata onwards: the same ``resolve_metadata`` rules
with the key's and workspace's defaults and schemas, the same record (analytics.logrecord), the same prices
(analytics.pricing), and ``write_log_batch`` (which also updates the rollups). A batch is all
or nothing: one invalid item rejects the request before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.utils import timezone

from analytics.ids import new_uuid7
from analytics.ingest import write_log_batch
from analytics.logrecord import LogRecord, log_body, log_record
from analytics.models import Feedback
from analytics.pricing import PriceBook, load_price_book, price_usage
from analytics.usage import UsageTracker
from config.parsing import InvalidParameter
from workspaces.errors import GatewayError
from workspaces.metadata import HEADER as METADATA_HEADER
from workspaces.metadata import MetadataPolicy, resolve_metadata
from workspaces.models import ApiKey, Workspace

# Metadata keys that carry tracing fields in Portkey's custom logs (both spellings).
TRACE_KEYS = {
    "traceId": "trace_id",
    "trace_id": "trace_id",
    "spanId": "span_id",
    "span_id": "span_id",
    "spanName": "span_name",
    "span_name": "span_name",
    "parentSpanId": "parent_span_id",
    "parent_span_id": "parent_span_id",
}
_TRACE_LIMITS = {"trace_id": 128, "span_id": 128, "parent_span_id": 128, "span_name": 200}
# Well-known API hosts -> provider names; any other host is recorded as itself.
KNOWN_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
    "api.mistral.ai": "mistral-ai",
    "api.groq.com": "groq",
    "api.cohere.com": "cohere",
    "api.together.xyz": "together-ai",
    "openrouter.ai": "openrouter",
}


class CustomLogError(ValueError):
    """An invalid custom log; ``param`` is the field path, e.g. ``[2].metadata.environment``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class _Context:
    api_key: ApiKey
    policy: MetadataPolicy
    prices: PriceBook
    store_bodies: bool
    now: datetime


def custom_logs_insert(*, api_key: ApiKey, items: list[dict], prefix_index: bool) -> list[str]:
    """Store validated custom logs (CustomLogSerializer data) for ``api_key``'s workspace;
    return their ids. Raises CustomLogError (nothing written) when an item is invalid."""
    context = _Context(
        api_key=api_key,
        policy=api_key.metadata_policy(),
        prices=load_price_book(),
        store_bodies=api_key.workspace.store_bodies,
        now=timezone.now(),
    )
    records = []
    for index, item in enumerate(items):
        where = f"[{index}]." if prefix_index else ""
        try:
            records.append(_record(item, context))
        except CustomLogError as exc:
            raise CustomLogError(where + exc.param, str(exc)) from None
    write_log_batch(records)
    return [record["id"] for record in records]


def _record(item: dict, context: _Context) -> LogRecord:
    request, response = item["request"], item["response"]
    request_headers = {name.lower(): value for name, value in request["headers"].items()}
    request_doc = _as_object(request["body"])
    response_doc = _as_object(response["body"])
    metadata = dict(item["metadata"])
    trace = {field: "" for field in _TRACE_LIMITS}
    for name in list(metadata):
        if name in TRACE_KEYS and isinstance(metadata[name], str | int):
            field = TRACE_KEYS[name]
            trace[field] = str(metadata.pop(name))[: _TRACE_LIMITS[field]]
    trace["trace_id"] = trace["trace_id"] or request_headers.get("x-portkey-trace-id", "")[:128] or new_uuid7()
    resolved = _resolve_metadata(metadata, request_doc, request_headers, context.policy)
    usage = _usage(response_doc)
    model = request_doc.get("model") if isinstance(request_doc.get("model"), str) else ""
    model = (model or usage.model or "")[:200]
    status = response["status"]
    provider = (request.get("provider") or _provider_from_url(request["url"]))[:64]
    cost, price_version = None, ""
    if usage.total_tokens:
        cost, price_version = price_usage(context.prices, context.api_key.workspace_id, provider, model, usage)
    latency = response.get("response_time", response.get("time", 0.0))
    record = log_record(
        id=new_uuid7(),
        created_at=context.now.astimezone(UTC).isoformat(),
        workspace_id=context.api_key.workspace_id,
        status_code=status,
        usage=usage,
        metadata=resolved.metadata,
        error_message="" if 200 <= status < 400 else _text(response["body"]),
        api_key_id=context.api_key.pk,
        provider=provider,
        model=model,
        endpoint=_endpoint(request["url"]),
        method=request["method"].upper()[:8],
        is_stream=bool(response["streamingMode"] or request_doc.get("stream") is True),
        latency_ms=round(float(latency), 3),
        cost=None if cost is None else str(cost),
        price_version=price_version,
        cache_status=str(response["headers"].get("x-portkey-cache-status", "DISABLED"))[:16],
        metadata_changes=resolved.changes,
        client_runtime=request_headers.get("x-portkey-runtime", "")[:64],
        sdk_version="custom log",
        **trace,
    )
    if context.store_bodies:
        record["body"] = log_body(request_headers, _text(request["body"]), _text(response["body"]))
    return record


def _resolve_metadata(metadata: dict, request_doc: dict, headers: dict[str, str], policy: MetadataPolicy):
    try:
        return resolve_metadata(
            header_value=orjson.dumps(metadata) if metadata else None,
            body_user=request_doc.get("user"),
            mapped_headers={h: headers[h] for h in settings.HEADERS_TO_METADATA if h in headers},
            baggage=headers.get("baggage"),
            policy=policy,
            strict=settings.METADATA_VALIDATION == "strict",
            request_first=settings.METADATA_PRECEDENCE == "request_first",
            max_keys=settings.METADATA_MAX_KEYS,
        )
    except GatewayError as exc:
        param = (exc.param or "metadata").replace(METADATA_HEADER, "metadata")
        raise CustomLogError(param, exc.message.replace(METADATA_HEADER, "metadata")) from None


def _as_object(body: object) -> dict:
    """A body as a dict when it is a JSON object or JSON text of one (Portkey's JS SDK sends
    bodies as strings), else {}."""
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
    return body if isinstance(body, dict) else {}


def _text(body: object) -> str:
    if isinstance(body, str):
        return body
    return orjson.dumps(body).decode() if body not in (None, {}, []) else ""


def _usage(response_doc: dict) -> UsageTracker:
    usage = UsageTracker()
    try:
        usage.read_usage(response_doc)
    except InvalidParameter as exc:  # a count that is no count, named: usage.prompt_tokens
        raise CustomLogError(f"response.body.{exc.param}", exc.reason) from None
    except (TypeError, ValueError, OverflowError):
        raise CustomLogError("response.body.usage", "Token counts in usage must be integers.") from None
    if not isinstance(usage.model, str):
        usage.model = ""
    return usage


def _split(url: str):
    try:
        return urlsplit(url)
    except ValueError:
        raise CustomLogError("request.url", "Enter a valid URL.") from None


def _provider_from_url(url: str) -> str:
    host = (_split(url).hostname or "").lower()
    return KNOWN_HOSTS.get(host, host or "custom")


def _endpoint(url: str) -> str:
    path = _split(url).path or "/"
    return (path[3:] if path.startswith("/v1/") else path)[:200]


def feedback_create(
    *, workspace: Workspace, trace_id: str, value: int, weight: float = 1.0, metadata: dict | None = None
) -> Feedback:
    feedback = Feedback(workspace=workspace, trace_id=trace_id, value=value, weight=weight, metadata=metadata or {})
    feedback.full_clean()
    feedback.save()
    return feedback
