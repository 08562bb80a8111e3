"""The one log record: what a producer (the gateway, Portkey's custom-log API) hands to the
writer (analytics.ingest.write_log_batch), through the gateway's buffer, Redis or the spool.

It is a TypedDict rather than a dataclass because it travels as JSON (orjson) between
processes and the writer must accept the dicts a Redis stream gives back; the type says which
keys exist and what they hold, and ``log_record`` is the one place that fills them, so the two
producers cannot drift apart. Every key but ``body`` and ``upstream_latency_ms`` (read by the
gateway's metrics only) is a RequestLog field of the same name.
"""

# No ``from __future__ import annotations``: TypedDict must see Required[...] itself to know
# the required keys (LogRecord.__required_keys__).
import functools
from typing import Protocol, Required, TypedDict

# The keys without which the writer dead-letters a record (analytics.ingest.MalformedRecord).
REQUIRED_KEYS = ("id", "created_at", "workspace_id", "status_code", "success")
SENSITIVE_HEADER_WORDS = ("authorization", "api-key", "apikey", "secret", "token", "cookie", "password")


class LogBody(TypedDict):
    """Stored apart from the log row (RequestBody), only when the workspace keeps bodies."""

    request_headers: dict[str, str]  # redacted: redact_headers
    request_body: str
    response_body: str


class LogRecord(TypedDict, total=False):
    id: Required[str]  # UUIDv7 text (analytics.ids): time-ordered, the idempotency key
    created_at: Required[str]  # ISO 8601 with offset
    workspace_id: Required[int]
    status_code: Required[int]
    success: Required[bool]
    api_key_id: int | None
    provider: str
    model: str
    endpoint: str
    method: str
    is_stream: bool
    latency_ms: float
    ttft_ms: float | None
    upstream_latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_prompt_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    audio_prompt_tokens: int
    audio_completion_tokens: int
    cost: str | None  # decimal text, 8 places; None: no price (unknown is not free)
    currency: str  # RequestLog defaults it to USD; prices are in USD
    price_version: str
    cache_status: str
    cache_saved_cost: str | None
    finish_reasons: list[str] | None
    retry_count: int
    config_id: str
    last_used_option_index: str
    attempts: list[dict]
    trace_id: str
    span_id: str
    parent_span_id: str
    span_name: str
    user: str
    metadata: dict[str, str]
    metadata_changes: list[str]
    error_message: str
    client_runtime: str
    sdk_version: str
    body: LogBody


class Usage(Protocol):
    """What a record reads from the usage of a call (analytics.usage.UsageTracker)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_prompt_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    audio_prompt_tokens: int
    audio_completion_tokens: int
    finish_reasons: list[str]


def log_record(
    *,
    id: str,
    created_at: str,
    workspace_id: int,
    status_code: int,
    usage: Usage,
    metadata: dict[str, str],
    error_message: str = "",
    **fields: object,
) -> LogRecord:
    """A record with the derived fields filled the same way for every producer: ``success``
    (unless the producer knows better: a span marked failed), ``user`` from the ``_user``
    metadata key, token counts from ``usage``, and the error cut to its column. ``fields`` are
    the other LogRecord keys as the producer knows them."""
    # ``fields`` is already a fresh dict: filled in place, which halves the cost of building a
    # second one (bench/bench_logrecord.py); the gateway builds one per request.
    user = metadata.get("_user")
    fields["id"] = id
    fields["created_at"] = created_at
    fields["workspace_id"] = workspace_id
    fields["status_code"] = status_code
    if "success" not in fields:
        fields["success"] = 200 <= status_code < 400
    fields["prompt_tokens"] = usage.prompt_tokens
    fields["completion_tokens"] = usage.completion_tokens
    fields["total_tokens"] = usage.total_tokens
    fields["cached_prompt_tokens"] = usage.cached_prompt_tokens
    fields["cache_write_tokens"] = usage.cache_write_tokens
    fields["reasoning_tokens"] = usage.reasoning_tokens
    fields["audio_prompt_tokens"] = usage.audio_prompt_tokens
    fields["audio_completion_tokens"] = usage.audio_completion_tokens
    fields["finish_reasons"] = usage.finish_reasons or None
    fields["user"] = user[:128] if user else ""
    fields["metadata"] = metadata
    fields["error_message"] = error_message[:2000]
    return fields  # type: ignore[return-value]


def log_body(headers: dict[str, str], request_body: str, response_body: str) -> LogBody:
    """A record's body with the request headers redacted (never a credential in a log)."""
    return {"request_headers": redact_headers(headers), "request_body": request_body, "response_body": response_body}


@functools.lru_cache(maxsize=2048)
def _sensitive(name: str) -> bool:
    return any(word in name for word in SENSITIVE_HEADER_WORDS)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers as stored with a log: anything that can carry a credential is redacted."""
    return {name: ("[redacted]" if _sensitive(name) else value) for name, value in headers.items()}
