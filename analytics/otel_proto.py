"""OTLP trace protobuf, written by hand: the few messages the span exporter sends
(ExportTraceServiceRequest > ResourceSpans > ScopeSpans > Span with KeyValue attributes and a
Status), field numbers from opentelemetry-proto's ``trace/v1/trace.proto`` and
``common/v1/common.proto``.

Why not build opentelemetry-proto's message classes: with the upb backend, constructing one
span with 15 attributes costs ~90 us of Python (each KeyValue and AnyValue is an object), so a
background exporter at 20,000 spans/s would take more than a core of the log writer's GIL.
Written as bytes, with the encoded (key, value) pairs of low-cardinality attributes (provider,
model, metadata values) cached, a span costs a few microseconds. tests/otel decode every
exported request with opentelemetry-proto's ``ExportTraceServiceRequest``, so the two cannot
drift apart unnoticed.
"""

from __future__ import annotations

import struct

# Span kind CLIENT: the gateway called the model (GenAI semantic conventions).
SPAN_KIND_CLIENT = 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_SMALL = SMALL = [bytes([n]) for n in range(128)]  # one-byte varints


def varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value] if value >= 0 else varint(value + (1 << 64))  # int64: two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag`` is the one-byte key (field number << 3 | 2)."""
    return tag + varint(len(payload)) + payload


# Attributes are KeyValue messages (Span field 9, Resource field 1): key = 1, value = 2 (an
# AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4).
_key_prefix: dict[str, bytes] = {}
_string_pairs: dict[tuple[str, str], bytes] = {}
_PAIR_CACHE_LIMIT = 50_000


def _key(key: str) -> bytes:
    prefix = _key_prefix.get(key)
    if prefix is None:
        prefix = field(b"\x0a", key.encode())
        if len(_key_prefix) < _PAIR_CACHE_LIMIT:
            _key_prefix[key] = prefix
    return prefix


def _key_value(key: str, any_value: bytes, tag: bytes) -> bytes:
    return field(tag, _key(key) + field(b"\x12", any_value))


_headers: dict[tuple[str, bytes, int], bytes] = {}
# AnyValue kinds (field keys) for attribute_header.
STRING, BOOL, INT, DOUBLE = b"\x0a", b"\x10", b"\x18", b"\x21"


def attribute_header(key: str, kind: bytes, length: int) -> bytes:
    """Everything of a span attribute (KeyValue) before its value's own bytes: the attribute
    tag and length, the key, the AnyValue tag and length, and the value's ``kind`` (a one-byte
    field key) and, for strings, its length. Depends only on (key, kind, length): cached, so an
    attribute is this header plus its value."""
    cache_key = (key, kind, length)
    header = _headers.get(cache_key)
    if header is None:
        inner = kind + (varint(length) if kind == STRING else b"")  # strings are length-delimited
        any_value = inner + b"\0" * length  # a stand-in of the value's length
        header = field(b"\x4a", _key(key) + field(b"\x12", any_value))[: -length or None]
        if len(_headers) < _PAIR_CACHE_LIMIT:
            _headers[cache_key] = header
    return header


def string_attribute(key: str, value: str, *, unique: bool = False) -> bytes:
    """A span's string attribute (Span.attributes = 9). Values that repeat (provider, model,
    metadata) are encoded once; ``unique`` ones (a log id) skip the cache they would only churn."""
    encoded = None if unique else _string_pairs.get((key, value))
    if encoded is None:
        data = value.encode("utf-8", "replace")
        encoded = attribute_header(key, STRING, len(data)) + data
        if not unique and len(value) <= 128:  # long values (error messages) are rarely repeated
            if len(_string_pairs) >= _PAIR_CACHE_LIMIT:
                _string_pairs.clear()
            _string_pairs[(key, value)] = encoded
    return encoded


def int_attribute(key: str, value: int) -> bytes:
    if 0 <= value < 128:
        data = _SMALL[value]
    elif 0 < value < 16384:  # most token counts: two bytes, without varint's loop
        data = bytes(((value & 0x7F) | 0x80, value >> 7))
    else:
        data = varint(value)
    return attribute_header(key, INT, len(data)) + data


def double_attribute(key: str, value: float) -> bytes:
    return attribute_header(key, DOUBLE, 8) + _DOUBLE.pack(value)


def bool_attribute(key: str, value: bool) -> bytes:
    return attribute_header(key, BOOL, 1) + (b"\x01" if value else b"\x00")


def string_array_attribute(key: str, values: list[str]) -> bytes:
    # AnyValue.array_value = 5 -> ArrayValue.values = 1 (repeated AnyValue).
    items = b"".join(field(b"\x0a", field(b"\x0a", v.encode("utf-8", "replace"))) for v in values)
    return _key_value(key, field(b"\x2a", items), b"\x4a")


def span(
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: list[bytes],
    status_code: int,
    status_message: str = "",
) -> bytes:
    """One Span message (without its outer tag)."""
    parts = [
        b"\x0a\x10" + trace_id,  # trace_id = 1 (16 bytes)
        b"\x12\x08" + span_id,  # span_id = 2 (8 bytes)
    ]
    if parent_span_id:
        parts.append(b"\x22\x08" + parent_span_id)  # parent_span_id = 4
    parts.append(field(b"\x2a", name.encode("utf-8", "replace")))  # name = 5
    parts.append(b"\x30" + _SMALL[SPAN_KIND_CLIENT])  # kind = 6
    parts.append(b"\x39" + _FIXED64.pack(start_ns))  # start_time_unix_nano = 7 (fixed64)
    parts.append(b"\x41" + _FIXED64.pack(end_ns))  # end_time_unix_nano = 8 (fixed64)
    parts.extend(attributes)  # attributes = 9
    if status_code:
        status = field(b"\x12", status_message.encode("utf-8", "replace")) if status_message else b""
        parts.append(field(b"\x7a", status + b"\x18" + _SMALL[status_code]))  # status = 15: message 2, code 3
    return b"".join(parts)


def span_field(span_bytes: bytes) -> bytes:
    """A Span as a ScopeSpans.spans field (tag 2): what ``framed_export_request`` joins."""
    return field(b"\x12", span_bytes)


def export_request(
    *, resource_attributes: list[tuple[str, str]], scope_name: str, scope_version: str, spans: list[bytes]
) -> bytes:
    """ExportTraceServiceRequest with one ResourceSpans holding one ScopeSpans."""
    return framed_export_request(
        resource_attributes=resource_attributes,
        scope_name=scope_name,
        scope_version=scope_version,
        framed_spans=[span_field(s) for s in spans],
    )


def framed_export_request(
    *, resource_attributes: list[tuple[str, str]], scope_name: str, scope_version: str, framed_spans: list[bytes]
) -> bytes:
    """``export_request`` of spans already framed as ScopeSpans.spans fields (``span_field``, or
    analytics.otel_spans.encode_spans' parts), written with one join: the outer messages only
    need the spans' total length, so their bytes are copied once."""
    resource = b"".join(  # Resource.attributes = 1
        _key_value(k, field(b"\x0a", v.encode("utf-8", "replace")), b"\x0a") for k, v in resource_attributes
    )
    scope = field(b"\x0a", scope_name.encode()) + field(b"\x12", scope_version.encode())
    head = field(b"\x0a", scope)  # ScopeSpans.scope = 1; then its spans = 2
    scope_spans_length = len(head) + sum(map(len, framed_spans))
    resource_head = field(b"\x0a", resource)  # ResourceSpans.resource = 1; then scope_spans = 2
    scope_spans_prefix = b"\x12" + varint(scope_spans_length)
    resource_spans_length = len(resource_head) + len(scope_spans_prefix) + scope_spans_length
    return b"".join(  # resource_spans = 1
        [b"\x0a", varint(resource_spans_length), resource_head, scope_spans_prefix, head, *framed_spans]
    )
