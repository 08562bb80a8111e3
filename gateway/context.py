"""One request as the gateway sees it (RequestContext), the header readers that fill it, and
the resolution of its metadata. The context becomes the request's log record
(gateway.logrecord)."""

from __future__ import annotations

import re
import time

from analytics.ids import new_uuid7
from analytics.usage import UsageTracker
from gateway.auth import KeySnapshot
from gateway.conf import Conf
from workspaces.metadata import MetadataError, resolve_metadata

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class RequestContext:
    """Everything known about one request; becomes its log record."""

    __slots__ = (
        "answer",
        "api_key_id",
        "attempts",
        "body",
        "cache_status",
        "client_headers",
        "config_id",
        "doc",
        "endpoint",
        "error_message",
        "is_stream",
        "log_id",
        "metadata",
        "metadata_changes",
        "method",
        "model",
        "option_index",
        "parent_span_id",
        "policy_hold",
        "provider",
        "response_body",
        "retry_count",
        "snapshot",
        "span_id",
        "span_name",
        "started",
        "started_wall",
        "status",
        "store_body",
        "trace_id",
        "ttft_ms",
        "upstream_ms",
        "usage",
    )

    def __init__(self, method: str, endpoint: str, headers: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.log_id = new_uuid7()
        self.method = method
        self.endpoint = endpoint
        self.client_headers = headers
        self.snapshot: KeySnapshot | None = None
        self.api_key_id: int | None = None
        self.provider = ""
        self.model = ""
        self.status = 500
        self.is_stream = False
        self.body = b""
        self.doc: dict | None = None
        self.response_body = b""
        self.metadata: dict[str, str] | None = None  # None until resolved
        self.metadata_changes: list[str] = []
        self.error_message = ""
        self.ttft_ms: float | None = None
        self.upstream_ms: float | None = None  # sending upstream -> its answer relayed (metrics)
        self.usage = UsageTracker()
        self.answer: bytes | None = None  # a successful answer's body, read for usage when logged
        self.cache_status = "DISABLED"
        # Set by gateway.routing when an x-portkey-config routes the request.
        self.config_id = ""
        self.option_index = ""
        self.retry_count = 0
        self.attempts: list[dict] = []
        self.policy_hold = None  # gateway.policies' reservations, settled when logged
        debug = headers.get("x-portkey-debug")
        self.store_body = debug is None or debug.lower() != "false"
        self.trace_id, self.span_id = trace_ids(headers)
        parent = headers.get("x-portkey-parent-span-id")
        self.parent_span_id = parent[:128] if parent else ""
        name = headers.get("x-portkey-span-name")
        self.span_name = name[:200] if name else ""

    def read_answer(self) -> UsageTracker:
        """The usage, with the answer's body read into it first (once): parsing waits until
        the log record is built, after the response went out."""
        if self.answer is not None:
            self.usage.read_body(self.answer)  # in the provider's own shape
            self.answer = None
        return self.usage

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-portkey-trace-id", self.trace_id.encode("latin-1", "replace")),
            (b"x-portkey-provider", self.provider.encode("latin-1", "replace")),
            (b"x-portkey-retry-attempt-count", b"%d" % self.retry_count),
            (b"x-portkey-cache-status", self.cache_status.encode()),
            (b"x-portico-log-id", self.log_id.encode()),
        ]
        if self.option_index:
            headers.append((b"x-portkey-last-used-option-index", self.option_index.encode()))
        return headers


def trace_ids(headers: dict[str, str]) -> tuple[str, str]:
    """Portkey headers win over W3C traceparent; a trace id is generated when none is sent."""
    trace_id = headers.get("x-portkey-trace-id", "")[:128]
    span_id = headers.get("x-portkey-span-id", "")[:128]
    traceparent = headers.get("traceparent")
    if traceparent:
        match = _TRACEPARENT.match(traceparent.strip().lower())
        if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
            trace_id = trace_id or match.group(1)
            span_id = span_id or match.group(2)
    return trace_id or new_uuid7(), span_id


def decode_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def client_key(headers: dict[str, str]) -> tuple[str | None, bool]:
    """The Portico key and whether it came in Authorization (then it is not a provider key)."""
    key = headers.get("x-portkey-api-key")
    if key:
        return key.strip(), False
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), True
    return None, False


def bearer(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def resolve_request_metadata(ctx: RequestContext, conf: Conf) -> None:
    """Resolve the request's metadata onto ``ctx``, also when it is refused (then the 400 is
    raised with ``ctx`` holding what could be resolved, for the log).

    A client sends the same metadata header request after request, so an accepted resolution
    is memoised per (inputs, key policy, settings) and handed out as a fresh copy: the same
    answer ``resolve_metadata`` gives, without re-validating it (a refusal is never memoised)."""
    headers = ctx.client_headers
    metadata_header = headers.get("x-portkey-metadata")
    body_user = ctx.doc.get("user") if ctx.doc else None
    mapped = (
        {h: headers[h] for h in conf.headers_to_metadata if h in headers} if conf.headers_to_metadata else _NO_HEADERS
    )
    baggage = headers.get("baggage")
    policy = ctx.snapshot.policy
    memo_key = None
    if body_user is None or type(body_user) is str:
        memo_key = (
            metadata_header,
            body_user,
            tuple(mapped.items()) if mapped else (),
            baggage,
            id(policy),
            conf.strict,
            conf.request_first,
            conf.metadata_max_keys,
        )
        memo = _resolved_memo.get(memo_key)
        if memo is not None and memo[0] is policy:  # the same policy object, not a reused id
            ctx.metadata, ctx.metadata_changes = dict(memo[1]), list(memo[2])
            return
    try:
        resolved = resolve_metadata(
            header_value=metadata_header.encode("latin-1") if metadata_header else None,  # raw bytes
            body_user=body_user,
            mapped_headers=mapped,
            baggage=baggage,
            policy=policy,
            strict=conf.strict,
            request_first=conf.request_first,
            max_keys=conf.metadata_max_keys,
        )
    except MetadataError as err:
        resolved = err.resolved
        ctx.metadata, ctx.metadata_changes = resolved.metadata, resolved.changes
        raise
    ctx.metadata, ctx.metadata_changes = resolved.metadata, resolved.changes
    if memo_key is not None:
        if len(_resolved_memo) >= _MEMO_MAX:
            _resolved_memo.clear()  # bounded: clients that vary their metadata per request
        _resolved_memo[memo_key] = (policy, dict(resolved.metadata), tuple(resolved.changes))


_NO_HEADERS: dict[str, str] = {}
_MEMO_MAX = 4096
# (header, body user, mapped headers, baggage, id(policy), settings) -> (policy, metadata, changes)
_resolved_memo: dict[tuple, tuple] = {}
