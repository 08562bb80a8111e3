"""Executes a Portkey config (workspaces.configs) for one request: retries, fallback,
loadbalance, simple cache, per-target timeout and body overrides.

Every attempt goes through ``GatewayApp._forward``, the function the plain path uses, with
the target's provider resolved by ``GatewayApp._resolve_provider``: whatever those do for a
provider (credentials, SSRF guard, streaming, usage) they do for each target. What this module
adds is a ``send`` that holds an answer back instead of relaying it when another attempt will
follow (a retry of the same target, or the next fallback target). The decision is taken on
the answer's status line, before any byte reached the client; once the first byte is out the
answer is the client's, so a stream that breaks later is never replayed elsewhere.

Semantics follow Portkey's gateway: ``retry.attempts`` counts retries after the first try;
fallback moves on for the strategy's ``on_status_codes`` (default: any status outside 2xx);
loadbalance picks one target by weight and does not fall back; a config that names an unknown
provider is the caller's error (400), not a reason to fall back. Retries wait what the
provider's ``retry-after-ms`` / ``retry-after`` asks (unless ``use_retry_after_header`` is
false), else an exponential backoff; all waits of one request share MAX_RETRY_WAIT_S, and an
answer asking for longer than is left is not retried (it goes to the fallback or the client).

One log per client request (DESIGN.md): its ``provider`` is the target that answered,
``retry_count`` the retries of that target (the ``x-portkey-retry-attempt-count`` header),
``attempts`` every try in order (target path, provider, status, milliseconds) and
``config_id`` the saved config's id ("inline" for a header JSON). Portkey's gateway writes one
log per target tried instead; counting a fallback as one request keeps request counts,
error rates and cost per request about what clients asked for, and the failed tries stay
visible in ``attempts``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import orjson

from analytics.usage import UsageTracker
from config.parsing import InvalidParameter, parse_int
from gateway.auth import ProviderSnapshot, config_cache
from gateway.response_cache import CachedAnswer, cache_key, response_cache
from workspaces.configs import HEADER, Config, Group, Target, inline_config, is_inline
from workspaces.errors import GatewayError

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.context import RequestContext

MAX_RETRY_WAIT_S = 60.0
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
# Failures of the upstream call itself (no answer): these count as the attempt's status.
_UPSTREAM_FAILURES = frozenset(("request_timeout", "upstream_timeout", "upstream_unreachable", "upstream_error"))
# Headers of ours that a cached answer must not replay (they are added fresh on every answer).
_NOT_CACHED = (b"x-portkey-", b"x-portico-", b"content-length")
_MISSING = object()
_TIMEOUT_HEADER = "x-portkey-request-timeout"
_rng = random.Random()

Hold = Callable[[int], bool]


def _never(status: int) -> bool:
    return False


def _config_error(exc: InvalidParameter) -> GatewayError:
    return GatewayError(400, exc.message, param=exc.param, code="invalid_config")


async def load_config(value: str, workspace_id: int) -> Config:
    """The config an ``x-portkey-config`` value stands for: inline JSON, or the id (``pc-...``)
    or slug of a config saved in the caller's workspace. Raises a 400 naming the field."""
    if is_inline(value):
        try:
            return inline_config(value)
        except InvalidParameter as exc:
            raise _config_error(exc) from None
    ref = value.strip()
    key = (workspace_id, ref)
    saved = config_cache.peek(key, _MISSING)
    if saved is _MISSING:
        saved = await config_cache.get(key)
    if saved is None:
        raise GatewayError(
            400,
            f"{HEADER}: '{ref[:100]}' is neither a JSON config nor the id or slug of a config saved in this workspace.",
            param=HEADER,
            code="invalid_config",
        )
    if isinstance(saved, InvalidParameter):
        raise _config_error(saved)
    return saved


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    """Seconds the provider asks to wait: retry-after-ms (or Azure's x-ms-retry-after-ms),
    else retry-after in seconds or as an HTTP date."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in (b"retry-after-ms", b"x-ms-retry-after-ms", b"retry-after"):
            found[name] = value
    for name, scale in ((b"retry-after-ms", 0.001), (b"x-ms-retry-after-ms", 0.001), (b"retry-after", 1.0)):
        raw = found.get(name)
        if raw is None:
            continue
        text = raw.decode("latin-1").strip()
        try:
            return parse_int(text, param=name.decode(), minimum=0) * scale
        except InvalidParameter:
            pass
        if scale == 1.0:
            try:
                return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
            except (TypeError, ValueError, OverflowError):
                pass
    return None


class _AttemptSend:
    """The client's ``send`` for one attempt: holds the answer back when ``hold(status)`` says
    another attempt follows, otherwise relays it and remembers that the client has it."""

    __slots__ = ("headers", "held", "hold", "send", "started", "status")

    def __init__(self, send, hold: Callable[[int, list], bool]) -> None:
        self.send = send
        self.hold = hold
        self.held = False
        self.started = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, message: dict) -> None:
        if self.held:
            return
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = message.get("headers") or []
            if self.hold(self.status, self.headers):
                self.held = True
                return
            self.started = True
        await self.send(message)


class Router:
    """One request's run through a config."""

    def __init__(
        self, app: GatewayApp, ctx: RequestContext, config: Config, scope: dict, receive, send, key_in_bearer: bool
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.config = config
        self.scope = scope
        self.receive = receive
        self.send = send
        self.key_in_bearer = key_in_bearer
        self.header_provider = ctx.provider
        self.doc = ctx.doc
        self.body = ctx.body
        self.wait_left = MAX_RETRY_WAIT_S
        self.header_timeout = ctx.client_headers.get(_TIMEOUT_HEADER)
        self.cached_headers: list[tuple[bytes, bytes]] = []  # of the answer that went out
        refresh = ctx.client_headers.get("x-portkey-cache-force-refresh", "")
        self.force_refresh = refresh.strip().lower() == "true"

    async def run(self) -> None:
        if await self._node(self.config.root, _never) is not None:
            # Only held answers come back, and the root holds none: a bug if reached.
            raise GatewayError(502, "No target of the config answered.", type="api_error", code="upstream_error")

    async def _node(self, node: Target | Group, hold: Hold) -> int | None:
        """None once an answer went to the client; else the status of a held failure."""
        if isinstance(node, Target):
            return await self._target(node, hold)
        if node.mode == "loadbalance":
            return await self._node(_rng.choices(node.options, weights=node.weights)[0], hold)
        if node.mode == "single":
            return await self._node(node.options[0], hold)
        codes = node.fallback_codes

        def triggers(status: int) -> bool:
            return status in codes if codes is not None else not 200 <= status < 300

        def hold_for_next(status: int) -> bool:
            return triggers(status) or hold(status)

        last = len(node.options) - 1
        for index, option in enumerate(node.options):
            status = await self._node(option, hold_for_next if index < last else hold)
            if status is None or index == last or not triggers(status):
                return status
        return None  # not reached: the last option returns above

    # --- one target ------------------------------------------------------------------
    async def _target(self, target: Target, hold: Hold) -> int | None:
        ctx = self.ctx
        ctx.option_index = target.path
        provider = await self._provider(target)
        key = None
        ctx.cache_status = "DISABLED"
        if target.cache_max_age and ctx.method == "POST":
            self._prepare_body(target)
            if not ctx.is_stream:
                query = self.scope.get("query_string") or b""
                key = cache_key(
                    workspace_id=ctx.snapshot.workspace_id,
                    provider=ctx.provider,
                    method=ctx.method,
                    endpoint=ctx.endpoint,
                    query=query,
                    body=ctx.body,
                )
                if self.force_refresh:
                    ctx.cache_status = "REFRESH"
                else:
                    cached = await response_cache.get(key)
                    if cached is not None:
                        await self._answer_from_cache(target, cached)
                        return None
                    ctx.cache_status = "MISS"
        retry = target.retry
        tries = 1 + (retry.attempts if retry else 0)
        for attempt in range(tries):
            wait: list[float] = []

            def hold_attempt(status: int, headers: list, attempt: int = attempt, wait: list = wait) -> bool:
                if retry and attempt < tries - 1 and status in retry.on_status_codes:
                    delay = self._delay(retry.use_retry_after, attempt, headers)
                    if delay is not None:
                        wait.append(delay)
                        return True
                return hold(status)

            status = await self._attempt(target, provider, attempt, hold_attempt)
            if status is None:
                if key is not None and 200 <= ctx.status < 300 and not ctx.is_stream:
                    await self._store(key, target)
                return None
            if not wait:
                return status  # held for the next fallback target
            self.wait_left -= wait[0]
            await asyncio.sleep(wait[0])
        return status  # not reached: the last try holds only for a fallback

    async def _provider(self, target: Target) -> ProviderSnapshot:
        ctx = self.ctx
        ctx.provider = target.provider or self.header_provider
        if not ctx.provider.strip():
            raise GatewayError(
                400,
                f'{HEADER} names no provider: add "provider": "@slug" to it, or send x-portkey-provider.',
                param=HEADER,
            )
        try:
            return await self.app._resolve_provider(ctx, ctx.snapshot, self.key_in_bearer)
        except GatewayError as err:
            if not target.provider or err.status != 400:
                raise
            param = HEADER + target.path.removeprefix("config")
            raise GatewayError(400, f"{param}: {err.message}", param=param) from None

    def _prepare_body(self, target: Target) -> None:
        """The body this target gets: the request's, with the target's override_params merged
        in. A fresh dict per attempt: forwarding a stream adds stream_options to it."""
        ctx = self.ctx
        doc = self.doc
        if doc is None:
            if target.override_params:
                raise GatewayError(
                    400,
                    f"{HEADER}: override_params need a JSON object body.",
                    param=HEADER + target.path.removeprefix("config") + ".override_params",
                )
            return
        if target.override_params:
            doc = {**doc, **target.override_params}
            ctx.body = orjson.dumps(doc)
        else:
            doc = dict(doc) if doc.get("stream") is True else doc
            ctx.body = self.body
        ctx.doc = doc
        model = doc.get("model")
        ctx.model = model[:200] if isinstance(model, str) else ""
        ctx.is_stream = doc.get("stream") is True

    async def _attempt(self, target: Target, provider: ProviderSnapshot, attempt: int, hold_attempt) -> int | None:
        ctx = self.ctx
        self._prepare_body(target)
        ctx.retry_count = attempt
        ctx.status = 500
        ctx.error_message = ""
        ctx.response_body = b""
        ctx.ttft_ms = None
        ctx.usage = UsageTracker()
        ctx.answer = None
        # The config's request_timeout is this target's x-portkey-request-timeout; a target
        # without one has the request's own.
        if target.request_timeout_ms:
            ctx.client_headers[_TIMEOUT_HEADER] = str(target.request_timeout_ms)
        elif self.header_timeout is None:
            ctx.client_headers.pop(_TIMEOUT_HEADER, None)
        else:
            ctx.client_headers[_TIMEOUT_HEADER] = self.header_timeout
        sender = _AttemptSend(self.send, hold_attempt)
        started = time.perf_counter()
        try:
            await self.app._forward(ctx, self.scope, self.receive, sender, provider)
        except GatewayError as err:
            if sender.started or err.code not in _UPSTREAM_FAILURES or not hold_attempt(err.status, []):
                self._record(target, err.status, started)
                raise
            status = err.status
        else:
            status = sender.status if sender.held else None
            if status is None:
                self.cached_headers = sender.headers
        self._record(target, ctx.status if status is None else status, started)
        return status

    def _delay(self, use_retry_after: bool, attempt: int, headers: list) -> float | None:
        """Seconds to wait before the next try; None when that would exceed what is left."""
        delay = _retry_after(headers) if use_retry_after else None
        if delay is None:
            delay = min(BACKOFF_BASE_S * 2**attempt, BACKOFF_MAX_S)
        return delay if delay <= self.wait_left else None

    def _record(self, target: Target, status: int, started: float, cache: str = "") -> None:
        entry = {
            "target": target.path,
            "provider": self.ctx.provider,
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if cache:
            entry["cache"] = cache
        self.ctx.attempts.append(entry)

    # --- cache -----------------------------------------------------------------------
    async def _answer_from_cache(self, target: Target, cached: CachedAnswer) -> None:
        ctx = self.ctx
        started = time.perf_counter()
        ctx.cache_status = "HIT"
        ctx.retry_count = 0
        ctx.status = cached.status
        ctx.response_body = cached.body
        headers = [*cached.headers, (b"content-length", str(len(cached.body)).encode()), *ctx.response_headers()]
        try:
            await self.send({"type": "http.response.start", "status": cached.status, "headers": headers})
            await self.send({"type": "http.response.body", "body": cached.body})
        finally:
            ctx.usage.read_body(cached.body)
            self._record(target, cached.status, started, cache="HIT")

    async def _store(self, key: str, target: Target) -> None:
        ctx = self.ctx
        headers = [(k, v) for k, v in self.cached_headers if not k.startswith(_NOT_CACHED)]
        await response_cache.set(key, CachedAnswer(ctx.status, headers, ctx.response_body), target.cache_max_age)
