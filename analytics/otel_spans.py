"""A stored log as an OpenTelemetry span (GenAI semantic conventions), encoded as OTLP protobuf
bytes (analytics.otel_proto) for the exporter (analytics.otel_export).

The README's "OpenTelemetry" section has the table of span fields; this module is its one
implementation. Encoding runs in the exporter's background thread, never in the writer's
transaction: the attributes most logs share (provider, model, endpoint, status, metadata values)
are encoded once each and reused, so a span costs a few microseconds.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from operator import itemgetter

from analytics import otel_proto as pb

INGESTED_SDK_VERSION = "otlp"  # RequestLog.sdk_version of logs made by OTLP ingest
METADATA_PREFIX = "portico.metadata."
SCOPE_NAME = "portico"
SCOPE_VERSION = "1"
# gen_ai.operation.name for the gateway's endpoints (GenAI semantic conventions).
OPERATIONS = {
    "chat/completions": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
_HEX = frozenset("0123456789abcdef")


# --- Ids ---------------------------------------------------------------------------------


def _hex_id(text: str, size: int) -> bytes | None:
    value = text.strip().lower()
    if len(value) == size * 2 and _HEX.issuperset(value) and value.strip("0"):
        return bytes.fromhex(value)
    return None


def trace_id_bytes(text: str) -> tuple[bytes, bool]:
    """(16-byte trace id, whether it was mapped). A W3C (32 hex) id is used as it is, a UUID
    (the gateway's generated ids) by its 16 bytes; anything else (Portkey trace ids are free
    text) maps deterministically to the first 16 bytes of its SHA-256, so every log of one
    Portkey trace lands in one OTel trace."""
    if (direct := _hex_id(text, 16)) is not None:
        return direct, False
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        try:
            return bytes.fromhex(text.replace("-", "")), False  # a UUID's 16 bytes
        except ValueError:
            pass
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()[:16], True


def span_id_bytes(text: str) -> tuple[bytes, bool]:
    """(8-byte span id, whether it was mapped): 16 hex used as is, anything else hashed."""
    if (direct := _hex_id(text, 8)) is not None:
        return direct, False
    return hashlib.sha256(b"span:" + text.encode("utf-8", "replace")).digest()[:8], True


def _own_span_id(log_id: uuid.UUID) -> bytes:
    # The random tail of the log's UUIDv7: unique per log and the same on every export.
    tail = log_id.bytes[8:]
    return tail if tail.strip(b"\0") else hashlib.sha256(log_id.bytes).digest()[:8]


# --- Log row -> span ---------------------------------------------------------------------


def _datetime_ns(value) -> int:
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


@lru_cache(maxsize=4096)
def _common_attributes(
    provider: str, model: str, endpoint: str, status_code: int, success: bool, cache_status: str, currency: str
) -> tuple[bytes, str]:
    """(the encoded attributes a log shares with many others, the operation name): most logs
    repeat a few (provider, model, endpoint, status) combinations, encoded once each."""
    operation_key = endpoint.lstrip("/").removeprefix("v1/")
    operation = OPERATIONS.get(operation_key, operation_key or "chat")
    attrs = [pb.string_attribute("gen_ai.operation.name", operation)]
    if provider:
        attrs.append(pb.string_attribute("gen_ai.provider.name", provider))
        attrs.append(pb.string_attribute("gen_ai.system", provider))  # the older name, still widely read
    if model:
        # The log keeps one model (the request's, else the one the answer named).
        attrs.append(pb.string_attribute("gen_ai.request.model", model))
        attrs.append(pb.string_attribute("gen_ai.response.model", model))
    attrs.append(pb.int_attribute("http.response.status_code", status_code))
    attrs.append(pb.string_attribute("portico.endpoint", endpoint))
    attrs.append(pb.string_attribute("portico.cache_status", cache_status))
    if currency:
        attrs.append(pb.string_attribute("portico.currency", currency))
    if not success:
        attrs.append(pb.string_attribute("error.type", str(status_code)))
    return b"".join(attrs), operation


_metadata_cache: dict[tuple, bytes] = {}


def _metadata_attribute(key: str, value: object) -> bytes:
    encoded = _metadata_cache.get((key, value))
    if encoded is None:
        encoded = pb.string_attribute(METADATA_PREFIX + str(key), value if type(value) is str else str(value))
        if len(_metadata_cache) >= 50_000:
            _metadata_cache.clear()
        _metadata_cache[(key, value)] = encoded
    return encoded


_metadata_blobs: dict[tuple, bytes] = {}


def _metadata_attributes(metadata: dict) -> bytes:
    # Whole metadata objects repeat too (a client sends the same few): encoded once each, when
    # their values are hashable; the blob is the per-key attributes joined, in the same order.
    try:
        key = tuple(metadata.items())
        encoded = _metadata_blobs.get(key)
    except TypeError:  # a list or object value
        key, encoded = None, None
    if encoded is None:
        encoded = b"".join([_metadata_attribute(k, v) for k, v in metadata.items()])
        if key is not None:
            if len(_metadata_blobs) >= 20_000:
                _metadata_blobs.clear()
            _metadata_blobs[key] = encoded
    return encoded


_LOG_ID_HEADER = pb.attribute_header("portico.log_id", pb.STRING, 36)
# The attributes every span has, their headers looked up once (a token count of 1..16383 is a
# one- or two-byte varint; others go through pb.int_attribute).
_INPUT_TOKENS = (
    pb.attribute_header("gen_ai.usage.input_tokens", pb.INT, 1),
    pb.attribute_header("gen_ai.usage.input_tokens", pb.INT, 2),
)
_OUTPUT_TOKENS = (
    pb.attribute_header("gen_ai.usage.output_tokens", pb.INT, 1),
    pb.attribute_header("gen_ai.usage.output_tokens", pb.INT, 2),
)
_COST_HEADER = pb.attribute_header("portico.cost", pb.DOUBLE, 8)
_TTFT_HEADER = pb.attribute_header("portico.ttft_ms", pb.DOUBLE, 8)
_STREAM = pb.bool_attribute("portico.stream", True)
_pack_double = struct.Struct("<d").pack


def _tokens(headers: tuple[bytes, bytes], key: str, value: int) -> bytes:
    if 0 <= value < 128:
        return headers[0] + pb.SMALL[value]
    if 0 < value < 16384:
        return headers[1] + bytes(((value & 0x7F) | 0x80, value >> 7))
    return pb.int_attribute(key, value)


_finish_cache: dict[tuple, bytes] = {}


def _finish_reasons_attribute(reasons: list) -> bytes:
    # A handful of distinct lists (["stop"], ["length"], ...): encoded once each.
    key = tuple(str(reason) for reason in reasons)
    encoded = _finish_cache.get(key)
    if encoded is None:
        encoded = pb.string_array_attribute("gen_ai.response.finish_reasons", list(key))
        if len(_finish_cache) >= 1000:
            _finish_cache.clear()
        _finish_cache[key] = encoded
    return encoded


def encode_span(row: dict) -> bytes:
    """The span for one stored log (a coerced RequestLog row from analytics.ingest).

    Ids: the trace is the log's trace id (mapped to 16 bytes when it is not hex, the original
    kept as ``portico.trace_id``). The span's parent is the span the request carried: its
    ``x-portkey-parent-span-id`` when given (then ``x-portkey-span-id`` is this span's own id),
    else its ``traceparent`` / ``x-portkey-span-id`` span; the span's own id otherwise comes
    from the log id.
    """
    log_id = row["id"]
    attrs: list[bytes] = []
    trace_text = row["trace_id"] or str(log_id)
    trace_id, mapped = trace_id_bytes(trace_text)
    if mapped:
        attrs.append(pb.string_attribute("portico.trace_id", trace_text, unique=True))
    carried_span, carried_parent = row["span_id"], row["parent_span_id"]
    if carried_parent:
        parent, parent_mapped = span_id_bytes(carried_parent)
        own = span_id_bytes(carried_span)[0] if carried_span else _own_span_id(log_id)
    elif carried_span:
        parent, parent_mapped = span_id_bytes(carried_span)
        own = _own_span_id(log_id)
    else:
        parent, parent_mapped, own = None, False, _own_span_id(log_id)
    if carried_span:
        attrs.append(pb.string_attribute("portico.span_id", carried_span, unique=True))
    if parent_mapped and carried_parent:
        attrs.append(pb.string_attribute("portico.parent_span_id", carried_parent))

    model, status_code, cost = row["model"], row["status_code"], row["cost"]
    common, operation = _common_attributes(
        row["provider"],
        model,
        row["endpoint"],
        status_code,
        row["success"],
        row["cache_status"],
        row["currency"] if cost is not None else "",
    )
    attrs.append(common)
    attrs.append(_tokens(_INPUT_TOKENS, "gen_ai.usage.input_tokens", row["prompt_tokens"]))
    attrs.append(_tokens(_OUTPUT_TOKENS, "gen_ai.usage.output_tokens", row["completion_tokens"]))
    if row["finish_reasons"]:
        attrs.append(_finish_reasons_attribute(row["finish_reasons"]))
    attrs.append(_LOG_ID_HEADER + str(log_id).encode())  # a UUID's text: always 36 ASCII bytes
    if cost is not None:
        attrs.append(_COST_HEADER + _pack_double(cost))
    if row["is_stream"]:
        attrs.append(_STREAM)
    if row["ttft_ms"] is not None:
        attrs.append(_TTFT_HEADER + _pack_double(row["ttft_ms"]))
    if row["retry_count"]:
        attrs.append(pb.int_attribute("portico.retry_count", row["retry_count"]))
    if row["config_id"]:
        attrs.append(pb.string_attribute("portico.config_id", row["config_id"]))
        attrs.append(pb.string_attribute("portico.last_used_option_index", row["last_used_option_index"]))
        attrs.append(pb.int_attribute("portico.attempts", len(row["attempts"])))
    if row["cache_saved_cost"] is not None:
        attrs.append(pb.double_attribute("portico.cache_saved_cost", float(row["cache_saved_cost"])))
    if row["user"]:
        attrs.append(pb.string_attribute("enduser.id", row["user"]))
    if row["metadata"]:
        attrs.append(_metadata_attributes(row["metadata"]))

    message = ""
    if row["success"]:
        status = pb.STATUS_UNSET  # instrumentations leave successful spans UNSET
    else:
        status = pb.STATUS_ERROR
        message = row["error_message"][:1024]
    start_ns = _datetime_ns(row["created_at"])
    end_ns = start_ns + int(row["latency_ms"] * 1_000_000)
    return pb.span(
        trace_id=trace_id,
        span_id=own,
        parent_span_id=parent,
        name=row["span_name"] or f"{operation} {model}".strip(),
        start_ns=start_ns,
        end_ns=end_ns,
        attributes=attrs,
        status_code=status,
        status_message=message,
    )


# --- A batch of rows -> spans, the common case in one pass -------------------------------

# What decides a span's name, kind and shared attributes (one dict lookup per row).
_shape = itemgetter("provider", "model", "endpoint", "status_code", "success", "cache_status", "currency", "span_name")
_values = itemgetter(
    "id", "trace_id", "created_at", "latency_ms", "prompt_tokens", "completion_tokens",
    "finish_reasons", "cost", "is_stream", "ttft_ms", "user", "metadata", "success",
)  # fmt: skip
# A row with any of these set takes encode_span (rare in gateway traffic).
_rare = itemgetter("span_id", "parent_span_id", "config_id", "retry_count", "cache_saved_cost")
_heads: dict[tuple, tuple[bytes, bytes, bytes]] = {}
_token_attributes: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})
_frame_prefixes: dict[int, bytes] = {}
_pack_times = struct.Struct("<BQBQ").pack  # start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a time since it in whole microseconds: _datetime_ns exactly
_MICROSECOND = timedelta(microseconds=1)
_NO_SPAN_ID = bytes(8)


def _head(shape: tuple) -> tuple[bytes, bytes, bytes]:
    """(the span's name and kind fields, its shared attributes with a cost, without): what every
    span of one (provider, model, endpoint, status, cache status, currency, span name) has."""
    provider, model, endpoint, status_code, success, cache_status, currency, span_name = shape
    heads = []
    for with_cost in (currency, ""):  # the currency is an attribute only of spans with a cost
        attributes, operation = _common_attributes(
            provider, model, endpoint, status_code, success, cache_status, with_cost
        )
        heads.append(attributes)
    name = span_name or f"{operation} {model}".strip()
    name_and_kind = pb.field(b"\x2a", name.encode("utf-8", "replace")) + b"\x30" + pb.SMALL[pb.SPAN_KIND_CLIENT]
    if len(_heads) >= 4096:
        _heads.clear()
    _heads[shape] = head = (name_and_kind, heads[0], heads[1])
    return head


def _token_attribute(which: int, value: int) -> bytes:
    cache = _token_attributes[which]
    encoded = cache.get(value)
    if encoded is None:
        headers, key = (
            (_INPUT_TOKENS, "gen_ai.usage.input_tokens")
            if which == 0
            else (_OUTPUT_TOKENS, "gen_ai.usage.output_tokens")
        )
        encoded = _tokens(headers, key, value)
        if 0 <= value < 16384:  # bounded: at most 16,384 entries
            cache[value] = encoded
    return encoded


def _frame_prefix(length: int) -> bytes:
    prefix = _frame_prefixes.get(length)
    if prefix is None:
        prefix = b"\x12" + pb.varint(length)
        if length < 65536:
            _frame_prefixes[length] = prefix
    return prefix


def encode_spans(rows: list[dict]) -> list[bytes]:
    """The spans of ``rows``, framed as ScopeSpans.spans fields for
    ``otel_proto.framed_export_request``: the same bytes as ``span_field(encode_span(row))``
    for each row (tests/otel check they agree), written with far fewer Python operations.

    A span is mostly bytes it shares with many others (its name, kind and the attributes of
    its provider, model, endpoint and status: one cached head per combination); per row only
    the ids, times, tokens, cost, log id, user and metadata are written, in encode_span's
    order. Rows with carried span ids, a config, retries or a cache saving go through
    encode_span. Raises what encoding a row raises (the exporter then encodes one by one)."""
    out: list[bytes] = []
    append = out.append
    heads, input_tokens, output_tokens = _heads, _token_attributes[0], _token_attributes[1]
    for row in rows:
        span_id, parent_span_id, config_id, retry_count, cache_saved_cost = _rare(row)
        if span_id or parent_span_id or config_id or retry_count or cache_saved_cost is not None:
            body = encode_span(row)
            append(_frame_prefix(len(body)))
            append(body)
            continue
        (
            log_id, trace_text, created_at, latency_ms, prompt_tokens, completion_tokens,
            reasons, cost, is_stream, ttft_ms, user, metadata, success,
        ) = _values(row)  # fmt: skip
        log_text = str(log_id)
        own = log_id.bytes[8:]
        if own == _NO_SPAN_ID:
            own = _own_span_id(log_id)
        trace_text = trace_text or log_text
        if len(trace_text) == 36 and trace_text[8] == trace_text[13] == trace_text[18] == trace_text[23] == "-":
            # A UUID's 16 bytes: trace_id_bytes' second case (its first never takes 36 characters).
            try:
                trace_id, mapped = bytes.fromhex(trace_text.replace("-", "")), False
            except ValueError:
                trace_id, mapped = trace_id_bytes(trace_text)
        else:
            trace_id, mapped = trace_id_bytes(trace_text)
        shape = _shape(row)
        head = heads.get(shape) or _head(shape)
        start_us = (created_at - _EPOCH) // _MICROSECOND if created_at.tzinfo is not None else -1
        start_ns = start_us * 1000 if start_us >= 0 else _datetime_ns(created_at)
        # encode_span's fields and attributes in its order; b"" where a row has none.
        parts = [
            b"\x0a\x10",
            trace_id,
            b"\x12\x08",
            own,
            head[0],
            _pack_times(0x39, start_ns, 0x41, start_ns + int(latency_ms * 1_000_000)),
            pb.string_attribute("portico.trace_id", trace_text, unique=True) if mapped else b"",
            head[1] if cost is not None else head[2],
            input_tokens.get(prompt_tokens) or _token_attribute(0, prompt_tokens),
            output_tokens.get(completion_tokens) or _token_attribute(1, completion_tokens),
            (_finish_cache.get(tuple(reasons)) or _finish_reasons_attribute(reasons)) if reasons else b"",
            _LOG_ID_HEADER,
            log_text.encode(),
            _COST_HEADER if cost is not None else b"",
            _pack_double(cost) if cost is not None else b"",
            _STREAM if is_stream else b"",
            _TTFT_HEADER if ttft_ms is not None else b"",
            _pack_double(ttft_ms) if ttft_ms is not None else b"",
            pb.string_attribute("enduser.id", user) if user else b"",
            _metadata_attributes(metadata) if metadata else b"",
        ]
        if not success:
            message = row["error_message"][:1024]
            status = pb.field(b"\x12", message.encode("utf-8", "replace")) if message else b""
            parts.append(pb.field(b"\x7a", status + b"\x18" + pb.SMALL[pb.STATUS_ERROR]))
        body = b"".join(parts)
        append(_frame_prefix(len(body)))
        append(body)
    return out
