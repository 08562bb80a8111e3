"""The gateway's own ASGI callable for ``/v1/...``: the lean hot path of DESIGN.md.

It reads the raw ASGI scope, authenticates from a per-process cache, resolves metadata,
forwards to the provider over one pooled client (workspaces.upstream.client) and hands a
log record to the LogBuffer once the answer is out. No Django request cycle, no middleware,
no database query when caches are warm.

The request's context lives in gateway.context, the settings snapshot and per-URL memos in
gateway.conf, the log record in gateway.logrecord.

Hot-path notes (measured with bench/gateway_overhead.py; keep them true when editing):
settings are read from gateway.conf's snapshot (``settings.X`` costs a LazyObject call each
time); ids are time-ordered UUIDv7 from uuid-utils (analytics.ids, ~0.2 us);
upstream URLs and their SSRF verdicts are memoised per URL; warm caches are read without
awaiting; usage is parsed after the response went out, and for a request that needs its
cost only for the log (no usage limit or policy), parsing, pricing and the record wait for the
log buffer's next flush (gateway.logrecord.emit_log); a stream is watched for client
disconnects by one task that cancels the relay, not two racing tasks; the upstream call
skips aiohttp's per-request machinery (the native client, workspaces.upstream.native).
"""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import chain

import aiohttp
import orjson
from asgiref.sync import sync_to_async
from django.db import connections
from yarl import URL

from config.parsing import InvalidParameter, parse_int
from gateway import providers, proxy, routing
from gateway.auth import KeySnapshot, ProviderSnapshot, authenticate, authenticate_cached, provider_cache
from gateway.conf import base_path, conf, confined_endpoint, upstream_guard, upstream_url
from gateway.context import RequestContext, bearer, client_key, decode_headers, resolve_request_metadata
from gateway.limits import limiter
from gateway.logbuffer import get_log_buffer
from gateway.logrecord import emit_log
from gateway.policies import enforcer
from gateway.response_cache import response_cache
from workspaces.errors import GatewayError
from workspaces.upstream import netguard, preflight
from workspaces.upstream.client import UpstreamAnswer, UpstreamClient, make_client

log = logging.getLogger("portico.gateway")

OPENAI_BASE_URL = "https://api.openai.com/v1"
INFERENCE_SCOPE = "inference"
MAX_REQUEST_TIMEOUT_MS = 24 * 3600 * 1000  # x-portkey-request-timeout: a day is more than any call
_MISSING = object()


class GatewayApp:
    def __init__(self) -> None:
        self.session: UpstreamClient | None = None
        self._start_lock: asyncio.Lock | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def startup(self) -> None:
        if self.session is not None:
            return
        # One pooled upstream client per worker (UPSTREAM_CLIENT picks the implementation).
        self.session = make_client()
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
        headers = decode_headers(scope["headers"])
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
        if sum(map(len, chain.from_iterable(scope["headers"]))) > conf.max_header_bytes:
            raise GatewayError(
                431,
                f"Request headers are larger than {conf.max_header_bytes} bytes.",
                code="headers_too_large",
                log=False,
            )
        key, key_in_bearer = client_key(headers)
        snapshot = authenticate_cached(key)
        if snapshot is None:
            snapshot = await authenticate(key)
        ctx.snapshot = snapshot
        ctx.api_key_id = snapshot.key_id
        ctx.store_body = ctx.store_body and snapshot.store_bodies
        endpoint = confined_endpoint(scope["path"])
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
        resolve_request_metadata(ctx, conf)
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
            if custom_host and not (conf.allow_custom_hosts or snapshot.allow_custom_hosts):
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
            secret = "" if key_in_bearer else bearer(ctx.client_headers)
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
        encoding = ctx.client_headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            # Compressed bytes read as JSON failed as "str is not valid UTF-8: surrogates not
            # allowed", naming neither the header nor what to do. (The request is logged.)
            raise GatewayError(
                415,
                f"Content-Encoding {encoding[:40]!r} is not supported on the gateway; send the JSON body uncompressed.",
                param="content-encoding",
                code="unsupported_content_encoding",
            )
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
            timeout = conf.upstream_timeout
        upstream_started = time.perf_counter()
        try:
            # The host decides the verdict, and a query string cannot change the host.
            blocked = upstream_guard(url, conf.allowed_networks)
            if blocked is not None:
                raise netguard.BlockedUpstreamError(blocked)
            resp = await self.session.request(
                ctx.method,
                URL(url + "?" + up.query) if up.query else upstream_url(url),
                up.headers,
                up.body or None,
                timeout,
                base_path=base_path(provider.base_url),
            )
        except TimeoutError:
            raise self._timeout_error(timeout_ms) from None
        except netguard.PathOutsideBaseError:
            raise _path_outside_v1() from None
        except (netguard.BlockedUpstreamError, aiohttp.ClientError) as exc:
            raise _upstream_failure(exc, "Could not reach the provider", "upstream_unreachable") from None
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
        self, ctx: RequestContext, resp: UpstreamAnswer, send, timeout_ms: str, up: providers.UpstreamRequest
    ) -> None:
        try:
            raw = await resp.read()
        except TimeoutError:
            raise self._timeout_error(timeout_ms) from None
        except (netguard.BlockedUpstreamError, aiohttp.ClientError) as exc:
            raise _upstream_failure(exc, "The provider connection failed", "upstream_error") from None
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
            # Read for the log when its record is built (ctx.read_answer), after the answer.
            if status < 400:
                ctx.answer = raw
            else:
                ctx.error_message = data[:500].decode("utf-8", "replace")

    async def _relay_stream(
        self, ctx: RequestContext, resp: UpstreamAnswer, receive, send, up: providers.UpstreamRequest
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
        await emit_log(ctx)


def _invalid(exc: InvalidParameter) -> GatewayError:
    return GatewayError(400, exc.message, param=exc.param)


def _path_outside_v1() -> GatewayError:
    return GatewayError(
        400,
        "The request path leaves /v1/ once percent-encoding and '..' segments are resolved; "
        "send the API path itself, e.g. /v1/chat/completions.",
        code="invalid_path",
    )


def _upstream_failure(exc: Exception, what: str, code: str) -> GatewayError:
    """The one reading of a client error: the SSRF guard's refusal is a 403 saying how to allow
    the address, anything else a 502 naming the error's type."""
    blocked = preflight.blocked_cause(exc)
    if blocked is not None:
        return _blocked(blocked)
    return GatewayError(502, f"{what} ({type(exc).__name__}).", type="api_error", code=code)


def _blocked(exc: Exception) -> GatewayError:
    return GatewayError(
        403,
        f"The provider address is not allowed: {exc}. Operators can allow it with UPSTREAM_ALLOWED_NETWORKS.",
        type="permission_error",
        code="upstream_blocked",
    )
