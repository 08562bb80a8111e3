"""The gateway's own ASGI callable for ``/v1/...``: the lean hot path of DESIGN.md.

It reads the raw ASGI scope, authenticates from a per-process cache, resolves metadata,
forwards to the provider over one pooled HTTP/1.1 client (proxy.UpstreamClient) and hands a
log record to the LogBuffer once the answer is out. No Django request cycle, no middleware,
no database query when caches are warm.

Hot-path notes (measured with bench/gateway_overhead.py; keep them true when editing):
settings are read from a snapshot refreshed on ``setting_changed`` (``settings.X`` costs a
LazyObject call each time); ids are time-ordered UUIDv7 from uuid-utils (analytics.ids, ~0.2 us);
upstream URLs and their SSRF verdicts are memoised per URL; warm caches are read without
awaiting; usage is parsed after the response went out; a stream is watched for client
disconnects by one task that cancels the relay, not two racing tasks; the upstream call
skips aiohttp's per-request machinery (proxy.UpstreamClient).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from datetime import UTC, datetime

import aiohttp
import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connections
from yarl import URL

from analytics.ids import new_uuid7
from analytics.usage import UsageTracker
from config.parsing import InvalidParameter, parse_int
from gateway import providers, proxy, routing
from gateway.auth import KeySnapshot, ProviderSnapshot, authenticate, authenticate_cached, provider_cache
from gateway.limits import limiter
from gateway.logbuffer import get_log_buffer
from gateway.policies import enforcer
from gateway.pricing import cached_price, price_of
from gateway.response_cache import response_cache
from workspaces.errors import GatewayError
from workspaces.metadata import MetadataError, resolve_metadata
from workspaces.upstream import netguard

log = logging.getLogger("portico.gateway")

OPENAI_BASE_URL = "https://api.openai.com/v1"
INFERENCE_SCOPE = "inference"
MAX_REQUEST_TIMEOUT_MS = 24 * 3600 * 1000  # x-portkey-request-timeout: a day is more than any call
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MISSING = object()


class _Conf:
    """The settings the hot path reads, copied once and refreshed whenever a setting changes
    (override_settings / pytest-django's ``settings`` fixture send ``setting_changed``)."""

    __slots__ = (
        "allow_custom_hosts",
        "allowed_networks",
        "headers_to_metadata",
        "max_body_bytes",
        "max_header_bytes",
        "metadata_max_keys",
        "request_first",
        "strict",
        "upstream_timeout",
    )

    def __init__(self) -> None:
        self.reload()

    def reload(self, **_: object) -> None:
        self.max_header_bytes = settings.GATEWAY_MAX_HEADER_BYTES
        self.max_body_bytes = settings.GATEWAY_MAX_BODY_BYTES
        self.headers_to_metadata = tuple(settings.HEADERS_TO_METADATA)
        self.strict = settings.METADATA_VALIDATION == "strict"
        self.request_first = settings.METADATA_PRECEDENCE == "request_first"
        self.metadata_max_keys = settings.METADATA_MAX_KEYS
        self.allow_custom_hosts = settings.PORTICO_ALLOW_CUSTOM_HOSTS
        self.upstream_timeout = _timeout_for(settings.GATEWAY_UPSTREAM_TIMEOUT)
        self.allowed_networks = tuple(settings.UPSTREAM_ALLOWED_NETWORKS)
        _upstream_guard.cache_clear()


@functools.lru_cache(maxsize=8)
def _timeout_for(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=seconds)


@functools.lru_cache(maxsize=1024)
def _upstream_guard(url: str, allowed_networks: tuple[str, ...]) -> str | None:
    """netguard.check_url's verdict for ``url``: None when allowed, else the refusal message.
    Memoised: the verdict depends only on the URL's host and the allowed networks."""
    try:
        netguard.check_url(url)
    except netguard.BlockedUpstreamError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=1024)
def _upstream_url(url: str) -> URL:
    # What aiohttp would build from the string on every call.
    return URL(url)


@functools.lru_cache(maxsize=1024)
def _confined_endpoint(path: str) -> str | None:
    """The endpoint to forward for a ``/v1/...`` path, or None when the path leaves ``/v1/``
    once percent-decoded and its dot segments resolved (``/v1/../admin``, ``/v1/%2e%2e/``,
    ``/v1/..%2f``, backslashes): appended to the provider's base URL it would reach another path
    of the provider's host with the provider's secret attached. Clients resolve dot segments
    before sending; a path that still has some is forwarded resolved, so the upstream reads
    the path that was checked. Memoised: a deployment sees a handful of distinct paths."""
    try:
        resolved = netguard.resolve_path(path)
    except netguard.PathOutsideBaseError:
        return None
    if not resolved.startswith("/v1/"):
        return None
    return path[3:] if resolved == path else resolved[3:]


@functools.lru_cache(maxsize=256)
def _base_path(base_url: str) -> str:
    # The path every upstream URL built on ``base_url`` must stay under (checked by the client).
    return netguard.resolve_path(URL(base_url).raw_path)


_conf = _Conf()


def _reload_conf(**kwargs: object) -> None:
    _conf.reload()


setting_changed.connect(_reload_conf, dispatch_uid="portico.gateway.conf")


class RequestContext:
    """Everything known about one request; becomes its log record."""

    __slots__ = (
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
        self.cache_status = "DISABLED"
        # Set by gateway.routing when an x-portkey-config routes the request.
        self.config_id = ""
        self.option_index = ""
        self.retry_count = 0
        self.attempts: list[dict] = []
        self.policy_hold = None  # gateway.policies' reservations, settled when logged
        debug = headers.get("x-portkey-debug")
        self.store_body = debug is None or debug.lower() != "false"
        self.trace_id, self.span_id = _trace_ids(headers)
        parent = headers.get("x-portkey-parent-span-id")
        self.parent_span_id = parent[:128] if parent else ""
        name = headers.get("x-portkey-span-name")
        self.span_name = name[:200] if name else ""

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


def _trace_ids(headers: dict[str, str]) -> tuple[str, str]:
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


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def _client_key(headers: dict[str, str]) -> tuple[str | None, bool]:
    """The Portico key and whether it came in Authorization (then it is not a provider key)."""
    key = headers.get("x-portkey-api-key")
    if key:
        return key.strip(), False
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), True
    return None, False


def _bearer(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


class GatewayApp:
    def __init__(self) -> None:
        self.session: proxy.UpstreamClient | None = None
        self._start_lock: asyncio.Lock | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def startup(self) -> None:
        if self.session is not None:
            return
        # One pooled upstream client per worker (see proxy.UpstreamClient).
        self.session = proxy.UpstreamClient(resolver=netguard.GuardedResolver())
        await get_log_buffer().start()

    async def shutdown(self) -> None:
        await get_log_buffer().close()
        await limiter.close()
        await enforcer.close()
        await response_cache.close()
        if self.session is not None:
            await self.session.close()
            self.session = None
        # The cache loaders ran in sync_to_async's shared thread; close its connections.
        await sync_to_async(connections.close_all)()

    async def lifespan(self, scope: dict, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ensure_started(self) -> None:
        # Servers without lifespan support (and tests) start the app on first use.
        if self.session is None:
            if self._start_lock is None:
                self._start_lock = asyncio.Lock()
            async with self._start_lock:
                await self.startup()

    # --- requests --------------------------------------------------------------------
    async def __call__(self, scope: dict, receive, send) -> None:
        if self.session is None:
            await self._ensure_started()
        headers = _decode_headers(scope["headers"])
        path = scope["path"]
        endpoint = path[3:] if path.startswith("/v1") else path
        ctx = RequestContext(scope["method"], endpoint, headers)
        try:
            await self._handle(ctx, scope, receive, send)
        except GatewayError as err:
            ctx.status = err.status
            ctx.error_message = err.message
            await self._send_error(ctx, send, err)
            if not err.log:
                return
        except Exception:
            log.exception("gateway error on %s %s", scope["method"], path)
            ctx.status = 500
            ctx.error_message = "internal gateway error"
            logged = "; the request was logged" if ctx.snapshot is not None else ""
            err = GatewayError(500, f"Internal gateway error{logged}.", type="server_error")
            await self._send_error(ctx, send, err)
        if ctx.snapshot is not None:
            await self._emit_log(ctx)

    async def _send_error(self, ctx: RequestContext, send, err: GatewayError) -> None:
        body = err.body()
        ctx.response_body = body
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *err.headers]
        try:
            await send(
                {"type": "http.response.start", "status": err.status, "headers": headers + ctx.response_headers()}
            )
            await send({"type": "http.response.body", "body": body})
        except Exception:  # the client is gone or the response already started
            log.debug("could not send error response", exc_info=True)

    async def _handle(self, ctx: RequestContext, scope: dict, receive, send) -> None:
        headers = ctx.client_headers
        conf = _conf
        if sum(len(name) + len(value) for name, value in scope["headers"]) > conf.max_header_bytes:
            raise GatewayError(
                431,
                f"Request headers are larger than {conf.max_header_bytes} bytes.",
                code="headers_too_large",
                log=False,
            )
        key, key_in_bearer = _client_key(headers)
        snapshot = authenticate_cached(key)
        if snapshot is None:
            snapshot = await authenticate(key)
        ctx.snapshot = snapshot
        ctx.api_key_id = snapshot.key_id
        ctx.store_body = ctx.store_body and snapshot.store_bodies
        endpoint = _confined_endpoint(scope["path"])
        if endpoint is None:
            raise _path_outside_v1()
        ctx.endpoint = endpoint
        ctx.body = await self._read_body(receive, conf.max_body_bytes)
        ctx.provider = headers.get("x-portkey-provider", "")
        if INFERENCE_SCOPE not in snapshot.scopes:
            raise GatewayError(
                403, "This API key does not have the inference scope.", type="permission_error", code="forbidden"
            )
        # --- routing configs (gateway.routing): providers are resolved per target there ---
        config_header = headers.get("x-portkey-config")
        config = None
        if config_header is not None:
            config = await routing.load_config(config_header, snapshot.workspace_id)
            ctx.config_id = config.config_id
        else:
            provider = await self._resolve_provider(ctx, snapshot, key_in_bearer)
        self._parse_body(ctx)
        _resolve_metadata(ctx, conf)
        if snapshot.rate_limit_rpm or snapshot.usage_limit_cost is not None:
            await limiter.check(
                key_id=snapshot.key_id,
                rpm=snapshot.rate_limit_rpm,
                cost_limit=snapshot.usage_limit_cost,
                period=snapshot.usage_limit_period,
            )
        ctx.policy_hold = await enforcer.check(
            workspace_id=snapshot.workspace_id,
            metadata=ctx.metadata,
            model=ctx.model,
            provider=ctx.provider,
            key_id=snapshot.key_id,
            doc=ctx.doc,
            body_size=len(ctx.body),
        )
        if config is not None:
            await routing.Router(self, ctx, config, scope, receive, send, key_in_bearer).run()
            return
        await self._forward(ctx, scope, receive, send, provider)

    async def _read_body(self, receive, limit: int) -> bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(499, "Client closed the request.", code="client_closed")
        body = message.get("body", b"")
        if len(body) > limit:
            raise GatewayError(413, f"Request body is larger than {limit} bytes.", code="body_too_large")
        if not message.get("more_body"):
            return body  # the common case: the whole body in one message
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(499, "Client closed the request.", code="client_closed")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"Request body is larger than {limit} bytes.", code="body_too_large")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _resolve_provider(
        self, ctx: RequestContext, snapshot: KeySnapshot, key_in_bearer: bool
    ) -> ProviderSnapshot:
        name = ctx.provider.strip()
        if not name:
            raise GatewayError(
                400, "Either x-portkey-config or x-portkey-provider header is required", param="x-portkey-provider"
            )
        if name.lower() == "openai":
            custom_host = ctx.client_headers.get("x-portkey-custom-host", "").strip()
            if custom_host and not (_conf.allow_custom_hosts or snapshot.allow_custom_hosts):
                raise GatewayError(
                    403,
                    "Custom hosts are not allowed for this workspace (x-portkey-custom-host).",
                    type="permission_error",
                    param="x-portkey-custom-host",
                )
            try:
                base_url = (
                    netguard.clean_upstream_base(custom_host, param="x-portkey-custom-host")
                    if custom_host
                    else OPENAI_BASE_URL
                )
            except InvalidParameter as exc:
                raise _invalid(exc) from None
            # The caller's own provider key travels in Authorization, unless Authorization
            # carried the Portico key itself.
            secret = "" if key_in_bearer else _bearer(ctx.client_headers)
            return ProviderSnapshot(slug="openai", kind=providers.OPENAI, base_url=base_url, secret=secret)
        slug = name[1:] if name.startswith("@") else name
        cache_key = (snapshot.workspace_id, slug)
        provider: ProviderSnapshot | None = provider_cache.peek(cache_key, _MISSING)
        if provider is _MISSING:
            provider = await provider_cache.get(cache_key)
        if provider is None:
            raise GatewayError(
                400,
                f"Invalid provider passed: '{name}' is not a provider of workspace '{snapshot.workspace_slug}'.",
                param="x-portkey-provider",
            )
        return provider

    def _parse_body(self, ctx: RequestContext) -> None:
        if ctx.method != "POST" or not ctx.body:
            return
        content_type = ctx.client_headers.get("content-type", "application/json")
        if "json" not in content_type:
            return
        try:
            doc = orjson.loads(ctx.body)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(
                400, f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
            ) from None
        if not isinstance(doc, dict):
            raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
        ctx.doc = doc
        model = doc.get("model")
        ctx.model = model[:200] if isinstance(model, str) else ""
        ctx.is_stream = doc.get("stream") is True

    async def _forward(self, ctx: RequestContext, scope: dict, receive, send, provider: ProviderSnapshot) -> None:
        query = scope.get("query_string")
        # The provider's kind decides the URL, auth header, body and how the answer is read.
        up = providers.prepare_upstream(
            provider,
            ctx.endpoint,
            ctx.client_headers,
            ctx.body,
            ctx.doc,
            stream=ctx.is_stream,
            query=query.decode("latin-1") if query else "",
        )
        if provider.kind != providers.OPENAI:
            ctx.usage = up.usage_tracker()
            ctx.is_stream = up.stream
            ctx.model = ctx.model or up.model
        url = up.url
        timeout_ms = ctx.client_headers.get("x-portkey-request-timeout", "").strip()
        if timeout_ms:
            try:
                ms = parse_int(timeout_ms, param="x-portkey-request-timeout", minimum=1, maximum=MAX_REQUEST_TIMEOUT_MS)
            except InvalidParameter as exc:
                raise GatewayError(400, exc.message.removesuffix(".") + " (milliseconds).", param=exc.param) from None
            timeout = aiohttp.ClientTimeout(total=ms / 1000)
        else:
            timeout = _conf.upstream_timeout
        upstream_started = time.perf_counter()
        try:
            # The host decides the verdict, and a query string cannot change the host.
            blocked = _upstream_guard(url, _conf.allowed_networks)
            if blocked is not None:
                raise netguard.BlockedUpstreamError(blocked)
            resp = await self.session.request(
                ctx.method,
                URL(url + "?" + up.query) if up.query else _upstream_url(url),
                up.headers,
                up.body or None,
                timeout,
                base_path=_base_path(provider.base_url),
            )
        except TimeoutError:
            raise self._timeout_error(timeout_ms) from None
        except netguard.PathOutsideBaseError:
            raise _path_outside_v1() from None
        except netguard.BlockedUpstreamError as exc:
            raise _blocked(exc) from None
        except aiohttp.ClientError as exc:
            if isinstance(getattr(exc, "os_error", None), netguard.BlockedUpstreamError):
                raise _blocked(exc.os_error) from None
            raise GatewayError(
                502,
                f"Could not reach the provider ({type(exc).__name__}).",
                type="api_error",
                code="upstream_unreachable",
            ) from None
        try:
            streaming = ctx.is_stream and resp.status == 200 and resp.content_type == "text/event-stream"
            if streaming:
                await self._relay_stream(ctx, resp, receive, send, up)
            else:
                await self._relay_body(ctx, resp, send, timeout_ms, up)
        finally:
            ctx.upstream_ms = (time.perf_counter() - upstream_started) * 1000
            # A connection whose stream was abandoned cannot go back to the pool.
            if ctx.status >= 499:
                resp.close()
            else:
                resp.release()

    def _timeout_error(self, timeout_ms: str) -> GatewayError:
        if timeout_ms:
            return GatewayError(
                408,
                f"Request exceeded x-portkey-request-timeout of {timeout_ms} ms.",
                type="timeout_error",
                code="request_timeout",
            )
        return GatewayError(504, "The provider did not answer in time.", type="timeout_error", code="upstream_timeout")

    async def _relay_body(
        self, ctx: RequestContext, resp: proxy.UpstreamResponse, send, timeout_ms: str, up: providers.UpstreamRequest
    ) -> None:
        try:
            raw = await resp.read()
        except TimeoutError:
            raise self._timeout_error(timeout_ms) from None
        except netguard.BlockedUpstreamError as exc:
            raise _blocked(exc) from None
        except aiohttp.ClientError as exc:
            if isinstance(getattr(exc, "os_error", None), netguard.BlockedUpstreamError):
                raise _blocked(exc.os_error) from None
            raise GatewayError(
                502, f"The provider connection failed ({type(exc).__name__}).", type="api_error", code="upstream_error"
            ) from None
        status = resp.status
        data = up.answer_body(status, raw) if up.translated else raw
        ctx.status = status
        ctx.is_stream = False
        ctx.response_body = data
        headers = proxy.response_headers(resp)
        headers.append((b"content-length", str(len(data)).encode()))
        headers += ctx.response_headers()
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
        finally:
            # Read for the log once the answer is out, so parsing does not delay it.
            if status < 400:
                ctx.usage.read_body(raw)  # in the provider's own shape
            else:
                ctx.error_message = data[:500].decode("utf-8", "replace")

    async def _relay_stream(
        self, ctx: RequestContext, resp: proxy.UpstreamResponse, receive, send, up: providers.UpstreamRequest
    ) -> None:
        # The upstream's clean end of body ends the stream, [DONE] or not (the Responses API
        # sends none); only a truncated body or a broken connection is a failure.
        ctx.status = resp.status
        relay = up.stream_relay(ctx.usage, capture=ctx.store_body)
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": proxy.response_headers(resp) + ctx.response_headers(),
            }
        )
        try:
            gone = await proxy.race_disconnect(proxy.relay_stream(resp, send, relay), receive)
        except (aiohttp.ClientError, TimeoutError) as exc:
            ctx.status = 502
            ctx.error_message = f"The provider stream broke off ({type(exc).__name__})."
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            gone = False
        except OSError:
            gone = True
        if relay.error is not None:
            ctx.status, ctx.error_message = relay.error
        if gone:
            ctx.status = 499
            ctx.error_message = "Client disconnected during the stream."
        ctx.response_body = bytes(relay.captured)
        if relay.first_chunk_at is not None:
            ctx.ttft_ms = (relay.first_chunk_at - ctx.started) * 1000
        ctx.usage.finish()

    # --- logging ---------------------------------------------------------------------
    async def _emit_log(self, ctx: RequestContext) -> None:
        snapshot = ctx.snapshot
        metadata = ctx.metadata
        if metadata is None:
            metadata = _metadata_after_error(ctx)
        usage = ctx.usage
        model = ctx.model or usage.model
        status = ctx.status
        cost, price_version = None, ""
        if usage.total_tokens:
            priced = cached_price(snapshot.workspace_id, ctx.provider, model, usage, _MISSING)
            if priced is _MISSING:
                try:
                    priced = await price_of(snapshot.workspace_id, ctx.provider, model, usage)
                except Exception:
                    # Prices unavailable (database down): the log matters more than its cost.
                    log.warning("could not price %s; logging without cost", model, exc_info=True)
                    priced = (None, "")
            cost, price_version = priced
        saved_cost = None
        if ctx.cache_status == "HIT":
            saved_cost, cost = cost, "0"  # answered from the cache: nothing was paid upstream
        if snapshot.usage_limit_cost is not None:
            await limiter.record_cost(key_id=snapshot.key_id, period=snapshot.usage_limit_period, cost=cost)
        if ctx.policy_hold is not None:
            await enforcer.settle(ctx.policy_hold, cost=cost, tokens=usage.total_tokens)
        headers = ctx.client_headers
        user = metadata.get("_user")
        record = {
            "id": ctx.log_id,
            "created_at": datetime.fromtimestamp(ctx.started_wall, UTC).isoformat(),
            "workspace_id": snapshot.workspace_id,
            "api_key_id": ctx.api_key_id,
            "provider": ctx.provider[:64],
            "model": model[:200],
            "endpoint": ctx.endpoint[:200],
            "method": ctx.method,
            "status_code": status,
            "success": 200 <= status < 400,
            "is_stream": ctx.is_stream,
            "latency_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "ttft_ms": round(ctx.ttft_ms, 3) if ctx.ttft_ms is not None else None,
            "upstream_latency_ms": round(ctx.upstream_ms, 3) if ctx.upstream_ms is not None else None,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_prompt_tokens": usage.cached_prompt_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_prompt_tokens": usage.audio_prompt_tokens,
            "audio_completion_tokens": usage.audio_completion_tokens,
            "cost": cost,
            "price_version": price_version,
            "cache_status": ctx.cache_status,
            "finish_reasons": usage.finish_reasons or None,
            "cache_saved_cost": saved_cost,
            "retry_count": ctx.retry_count,
            "config_id": ctx.config_id,
            "last_used_option_index": ctx.option_index,
            "attempts": ctx.attempts,
            "trace_id": ctx.trace_id,
            "span_id": ctx.span_id,
            "parent_span_id": ctx.parent_span_id,
            "span_name": ctx.span_name,
            "user": user[:128] if user else "",
            "metadata": metadata,
            "metadata_changes": ctx.metadata_changes,
            "error_message": ctx.error_message[:2000],
            "client_runtime": headers.get("x-portkey-runtime") or headers.get("x-stainless-runtime", ""),
            "sdk_version": _sdk_version(headers),
        }
        if ctx.store_body:
            record["body"] = {
                "request_headers": proxy.redact_headers(headers),
                "request_body": ctx.body.decode("utf-8", "replace"),
                "response_body": ctx.response_body.decode("utf-8", "replace"),
            }
        get_log_buffer().emit(record)


def _resolve_metadata(ctx: RequestContext, conf: _Conf) -> None:
    """Resolve the request's metadata onto ``ctx``, also when it is refused (then the 400 is
    raised with ``ctx`` holding what could be resolved, for the log)."""
    headers = ctx.client_headers
    metadata_header = headers.get("x-portkey-metadata")
    try:
        resolved = resolve_metadata(
            header_value=metadata_header.encode("latin-1") if metadata_header else None,  # raw bytes
            body_user=ctx.doc.get("user") if ctx.doc else None,
            mapped_headers={h: headers[h] for h in conf.headers_to_metadata if h in headers}
            if conf.headers_to_metadata
            else {},
            baggage=headers.get("baggage"),
            policy=ctx.snapshot.policy,
            strict=conf.strict,
            request_first=conf.request_first,
            max_keys=conf.metadata_max_keys,
        )
    except MetadataError as err:
        resolved = err.resolved
        ctx.metadata, ctx.metadata_changes = resolved.metadata, resolved.changes
        raise
    ctx.metadata, ctx.metadata_changes = resolved.metadata, resolved.changes


def _metadata_after_error(ctx: RequestContext) -> dict[str, str]:
    """The metadata of a request refused before its metadata was resolved (unknown provider,
    malformed body, ...): resolved now, so the failure is logged and counted with its
    workspace and key defaults, header values and ``_user``, not with ``{}``."""
    if ctx.doc is None and ctx.body and ctx.method == "POST":
        try:  # the body may be fine when something else was refused first (`user`, `model`)
            doc = orjson.loads(ctx.body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            ctx.doc = doc
            model = doc.get("model")
            ctx.model = ctx.model or (model[:200] if isinstance(model, str) else "")
    try:
        _resolve_metadata(ctx, _conf)
    except MetadataError:
        pass  # the request already failed for another reason; the refusal is in metadata_changes
    except Exception:
        log.exception("could not resolve metadata for the log of a failed request")
        ctx.metadata = {}
    return ctx.metadata


def _invalid(exc: InvalidParameter) -> GatewayError:
    return GatewayError(400, exc.message, param=exc.param)


def _path_outside_v1() -> GatewayError:
    return GatewayError(
        400,
        "The request path leaves /v1/ once percent-encoding and '..' segments are resolved; "
        "send the API path itself, e.g. /v1/chat/completions.",
        code="invalid_path",
    )


def _blocked(exc: Exception) -> GatewayError:
    return GatewayError(
        403,
        f"The provider address is not allowed: {exc}. Operators can allow it with UPSTREAM_ALLOWED_NETWORKS.",
        type="permission_error",
        code="upstream_blocked",
    )


def _sdk_version(headers: dict[str, str]) -> str:
    if version := headers.get("x-portkey-package-version"):
        return f"portkey {version}"[:64]
    if version := headers.get("x-stainless-package-version"):
        return f"openai {version}"[:64]
    return ""
