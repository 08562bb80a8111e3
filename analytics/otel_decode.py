"""OTLP/HTTP trace payloads (ExportTraceServiceRequest) decoded from protobuf or JSON into one
shape, ``SpanIn``, for analytics.otel_ingest. A malformed payload raises ``OtlpError`` naming
where (``resourceSpans[0].scopeSpans[0].spans[3].traceId``): the API answers 400 with it.

JSON follows OTLP/JSON: lowerCamelCase names (protobuf's own names accepted too), ids in hex,
64-bit integers as decimal strings or numbers, enum values as numbers or their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from config.parsing import BIGINT_MIN, InvalidParameter, parse_int


class OtlpError(ValueError):
    """A malformed payload; ``param`` is where, e.g. ``resourceSpans[0].scopeSpans[0].spans[3].traceId``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True)
class SpanIn:
    """One span, decoded from either encoding."""

    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str  # 16 hex or ""
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict
    resource: dict
    exception: str = ""


def _any_value(value) -> object:
    """An opentelemetry-proto AnyValue as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    inner = getattr(value, kind)
    if kind == "array_value":
        return [_any_value(v) for v in inner.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in inner.values}
    if kind == "bytes_value":
        return inner.hex()
    return inner


def decode_protobuf(body: bytes) -> list[SpanIn]:
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, ValueError) as exc:
        raise OtlpError("body", f"Not an OTLP ExportTraceServiceRequest in protobuf: {exc}") from None
    spans = []
    for r, resource_spans in enumerate(request.resource_spans):
        resource = {kv.key: _any_value(kv.value) for kv in resource_spans.resource.attributes}
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for n, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                exception = ""
                for event in span.events:
                    if event.name == "exception":
                        exception = str(
                            next((_any_value(kv.value) for kv in event.attributes if kv.key == "exception.message"), "")
                        )
                        break
                spans.append(
                    SpanIn(
                        trace_id=_binary_id(span.trace_id, 16, f"{where}.traceId"),
                        span_id=_binary_id(span.span_id, 8, f"{where}.spanId"),
                        parent_span_id=_binary_id(span.parent_span_id, 8, f"{where}.parentSpanId", optional=True),
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        attributes={kv.key: _any_value(kv.value) for kv in span.attributes},
                        resource=resource,
                        exception=exception,
                    )
                )
    return spans


def _binary_id(raw: bytes, size: int, where: str, optional: bool = False) -> str:
    if optional and not raw:
        return ""
    if len(raw) != size or not raw.strip(b"\0"):
        raise OtlpError(where, f"Must be {size} bytes, not all zero.")
    return raw.hex()


def _get(obj: dict, camel: str, snake: str) -> object:
    # OTLP/JSON uses lowerCamelCase; protobuf's JSON mapping also accepts the proto names.
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _json_list(obj: dict, camel: str, snake: str, where: str) -> list:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(f"{where}.{camel}", "Must be an array.")
    return value


def _json_object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise OtlpError(where, "Must be an object.")
    return value


def _json_any_value(value: object, where: str) -> object:
    value = _json_object(value, where) if value is not None else {}
    for key, kind in (("stringValue", str), ("boolValue", bool)):
        if key in value:
            if not isinstance(value[key], kind):
                raise OtlpError(f"{where}.{key}", f"Must be a {kind.__name__}.")
            return value[key]
    if "intValue" in value:
        return _json_int(value["intValue"], f"{where}.intValue")
    if "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, bool) or not isinstance(number, int | float | str):
            raise OtlpError(f"{where}.doubleValue", "Must be a number.")
        try:
            return float(number)
        except ValueError:
            raise OtlpError(f"{where}.doubleValue", "Must be a number.") from None
    if "arrayValue" in value:
        items = _json_list(_json_object(value["arrayValue"], f"{where}.arrayValue"), "values", "values", where)
        return [_json_any_value(v, f"{where}.arrayValue.values[{i}]") for i, v in enumerate(items)]
    if "kvlistValue" in value:
        return _json_attributes(_json_object(value["kvlistValue"], f"{where}.kvlistValue"), f"{where}.kvlistValue")
    if "bytesValue" in value:
        return str(value["bytesValue"])
    return None


def _json_attributes(obj: dict, where: str, key: str = "values") -> dict:
    attributes = {}
    for i, item in enumerate(_json_list(obj, key, key, where)):
        item = _json_object(item, f"{where}.{key}[{i}]")
        name = item.get("key")
        if not isinstance(name, str):
            raise OtlpError(f"{where}.{key}[{i}].key", "Must be a string.")
        attributes[name] = _json_any_value(item.get("value"), f"{where}.{key}[{i}].value")
    return attributes


def _json_int(value: object, where: str, minimum: int = BIGINT_MIN) -> int:
    """A 64-bit integer: OTLP/JSON writes them as decimal strings; numbers are accepted too.
    Through config.parsing like every other integer a request carries: "²", 5,000 digits and,
    for times (``minimum=0``: protobuf's fixed64 has no negatives), -1 are refused by name."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise OtlpError(where, "Must be an integer (or a decimal string).")
    try:
        return parse_int(value, param=where, minimum=minimum)
    except InvalidParameter:
        expected = "a whole number of at least 0" if minimum == 0 else "a 64-bit integer"
        raise OtlpError(where, f"Must be {expected} (a number or a decimal string).") from None


def _hex_id(value: object, size: int, where: str, optional: bool = False) -> str:
    if optional and value in (None, ""):
        return ""
    text = value.lower() if isinstance(value, str) else ""
    if len(text) != size * 2 or not text.strip("0") or any(c not in "0123456789abcdef" for c in text):
        raise OtlpError(where, f"Must be {size * 2} hex digits, not all zero (OTLP/JSON ids are hex, not base64).")
    return text


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def decode_json(body: bytes) -> list[SpanIn]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError("body", f"Not valid JSON: {exc}") from None
    document = _json_object(document, "body")
    spans = []
    for r, resource_spans in enumerate(_json_list(document, "resourceSpans", "resource_spans", "body")):
        where_r = f"resourceSpans[{r}]"
        resource_spans = _json_object(resource_spans, where_r)
        resource_obj = _json_object(resource_spans.get("resource") or {}, f"{where_r}.resource")
        resource = _json_attributes(resource_obj, f"{where_r}.resource", "attributes")
        for s, scope_spans in enumerate(_json_list(resource_spans, "scopeSpans", "scope_spans", where_r)):
            where_s = f"{where_r}.scopeSpans[{s}]"
            scope_spans = _json_object(scope_spans, where_s)
            for n, span in enumerate(_json_list(scope_spans, "spans", "spans", where_s)):
                where = f"{where_s}.spans[{n}]"
                span = _json_object(span, where)
                status = _json_object(span.get("status") or {}, f"{where}.status")
                code = status.get("code", 0)
                code = _STATUS_NAMES.get(code, code) if isinstance(code, str) else code
                if isinstance(code, bool) or not isinstance(code, int):
                    raise OtlpError(f"{where}.status.code", "Must be 0, 1 or 2 (unset, ok, error).")
                message = status.get("message") or ""
                exception = ""
                for e, event in enumerate(_json_list(span, "events", "events", where)):
                    event = _json_object(event, f"{where}.events[{e}]")
                    if event.get("name") == "exception":
                        event_attributes = _json_attributes(event, f"{where}.events[{e}]", "attributes")
                        exception = str(event_attributes.get("exception.message") or "")
                        break
                spans.append(
                    SpanIn(
                        trace_id=_hex_id(_get(span, "traceId", "trace_id"), 16, f"{where}.traceId"),
                        span_id=_hex_id(_get(span, "spanId", "span_id"), 8, f"{where}.spanId"),
                        parent_span_id=_hex_id(
                            _get(span, "parentSpanId", "parent_span_id"), 8, f"{where}.parentSpanId", optional=True
                        ),
                        name=str(span.get("name") or ""),
                        start_ns=_json_int(
                            _get(span, "startTimeUnixNano", "start_time_unix_nano") or 0,
                            f"{where}.startTimeUnixNano",
                            minimum=0,
                        ),
                        end_ns=_json_int(
                            _get(span, "endTimeUnixNano", "end_time_unix_nano") or 0,
                            f"{where}.endTimeUnixNano",
                            minimum=0,
                        ),
                        status_code=code,
                        status_message=str(message),
                        attributes=_json_attributes(span, where, "attributes"),
                        resource=resource,
                        exception=exception,
                    )
                )
    return spans
