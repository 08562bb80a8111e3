"""A finished request's log record (analytics.logrecord.LogRecord), priced and handed to the
log buffer. Runs after the answer went out: nothing here delays the response."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import partial

import orjson

from analytics.logrecord import LogRecord, log_body, log_record
from analytics.pricing import PriceBook
from gateway.conf import conf
from gateway.context import RequestContext, resolve_request_metadata
from gateway.limits import limiter
from gateway.logbuffer import get_log_buffer
from gateway.policies import enforcer
from gateway.pricing import Priced, cached_price, price_cache, price_from_book, price_of
from workspaces.metadata import MetadataError

log = logging.getLogger("portico.gateway")
_MISSING = object()


async def emit_log(ctx: RequestContext) -> None:
    """Build, price and buffer the record of ``ctx``; counts its cost against the key's usage
    limit and settles its policy reservations.

    The common request (no usage limit, metadata resolved, prices cached) has its record built
    at the log buffer's next flush, in a batch, so the work after the answer does not hold the
    event loop between requests (bench/RESULTS.md, 2026-12-06 h-hot2). Its policy reservations
    are settled there too: until then they count as their estimates, so a budget's correction
    waits at most one flush interval (LOG_FLUSH_INTERVAL_MS). A key's usage limit is checked
    against settled cost on the next request, so those requests settle here."""
    ended = time.perf_counter()
    snapshot = ctx.snapshot
    if snapshot.usage_limit_cost is None and ctx.metadata is not None:
        book = price_cache.peek("all", _MISSING)
        if book is not _MISSING and book is not None:
            ctx.doc = None  # not needed for the record: fewer objects kept alive until the flush
            get_log_buffer().emit(partial(_deferred_record, ctx, book, ended))
            return
    if ctx.metadata is None:
        metadata_after_error(ctx)
    usage = ctx.read_answer()
    model = ctx.model or usage.model
    cost, price_version = await _price(ctx, model) if usage.total_tokens else (None, "")
    if snapshot.usage_limit_cost is not None:
        counted = "0" if ctx.cache_status == "HIT" else cost
        await limiter.record_cost(key_id=snapshot.key_id, period=snapshot.usage_limit_period, cost=counted)
    if ctx.policy_hold is not None:
        counted = "0" if ctx.cache_status == "HIT" else cost
        await enforcer.settle(ctx.policy_hold, cost=counted, tokens=usage.total_tokens)
    get_log_buffer().emit(build_record(ctx, model, cost, price_version, ended))


def _deferred_record(ctx: RequestContext, book: PriceBook, ended: float) -> LogRecord:
    usage = ctx.read_answer()
    model = ctx.model or usage.model
    cost, price_version = (
        price_from_book(book, ctx.snapshot.workspace_id, ctx.provider, model, usage)
        if usage.total_tokens
        else (None, "")
    )
    if ctx.policy_hold is not None:
        counted = "0" if ctx.cache_status == "HIT" else cost
        enforcer.settle_now(ctx.policy_hold, cost=counted, tokens=usage.total_tokens)
    return build_record(ctx, model, cost, price_version, ended)


def build_record(ctx: RequestContext, model: str, cost: str | None, price_version: str, ended: float) -> LogRecord:
    """The record of a finished request; ``cost`` is what the call would cost upstream (an
    answer from the cache is logged at 0 with that cost as its saving); ``ended`` is when the
    request finished (perf_counter)."""
    saved_cost = None
    if ctx.cache_status == "HIT":
        saved_cost, cost = cost, "0"  # answered from the cache: nothing was paid upstream
    headers = ctx.client_headers
    record = log_record(
        id=ctx.log_id,
        created_at=iso_utc(ctx.started_wall),
        workspace_id=ctx.snapshot.workspace_id,
        status_code=ctx.status,
        usage=ctx.usage,
        metadata=ctx.metadata,
        error_message=ctx.error_message,
        api_key_id=ctx.api_key_id,
        provider=ctx.provider[:64],
        model=model[:200],
        endpoint=ctx.endpoint[:200],
        method=ctx.method,
        is_stream=ctx.is_stream,
        latency_ms=round((ended - ctx.started) * 1000, 3),
        ttft_ms=round(ctx.ttft_ms, 3) if ctx.ttft_ms is not None else None,
        upstream_latency_ms=round(ctx.upstream_ms, 3) if ctx.upstream_ms is not None else None,
        cost=cost,
        price_version=price_version,
        cache_status=ctx.cache_status,
        cache_saved_cost=saved_cost,
        retry_count=ctx.retry_count,
        config_id=ctx.config_id,
        last_used_option_index=ctx.option_index,
        attempts=ctx.attempts,
        trace_id=ctx.trace_id,
        span_id=ctx.span_id,
        parent_span_id=ctx.parent_span_id,
        span_name=ctx.span_name,
        metadata_changes=ctx.metadata_changes,
        client_runtime=headers.get("x-portkey-runtime") or headers.get("x-stainless-runtime", ""),
        sdk_version=sdk_version(headers),
    )
    if ctx.store_body:
        record["body"] = log_body(
            headers, ctx.body.decode("utf-8", "replace"), ctx.response_body.decode("utf-8", "replace")
        )
    return record


def iso_utc(timestamp: float) -> str:
    """``datetime.fromtimestamp(timestamp, UTC).isoformat()``, with the date and time of day
    formatted once per second (every request of that second shares them)."""
    second = int(timestamp)
    prefix = _iso_seconds.get(second)
    if prefix is None:
        if len(_iso_seconds) >= 64:
            _iso_seconds.clear()
        prefix = _iso_seconds[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    micros = round((timestamp - second) * 1_000_000)
    if micros >= 1_000_000:  # rounding reached the next second
        return iso_utc(float(second + 1))
    return f"{prefix}.{micros:06d}+00:00" if micros else f"{prefix}+00:00"


_iso_seconds: dict[int, str] = {}


async def _price(ctx: RequestContext, model: str) -> Priced:
    workspace_id = ctx.snapshot.workspace_id
    priced = cached_price(workspace_id, ctx.provider, model, ctx.usage, _MISSING)
    if priced is not _MISSING:
        return priced
    try:
        return await price_of(workspace_id, ctx.provider, model, ctx.usage)
    except Exception:
        # Prices unavailable (database down): the log matters more than its cost.
        log.warning("could not price %s; logging without cost", model, exc_info=True)
        return None, ""


def metadata_after_error(ctx: RequestContext) -> dict[str, str]:
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
        resolve_request_metadata(ctx, conf)
    except MetadataError:
        pass  # the request already failed for another reason; the refusal is in metadata_changes
    except Exception:
        log.exception("could not resolve metadata for the log of a failed request")
        ctx.metadata = {}
    return ctx.metadata


def sdk_version(headers: dict[str, str]) -> str:
    if version := headers.get("x-portkey-package-version"):
        return f"portkey {version}"[:64]
    if version := headers.get("x-stainless-package-version"):
        return f"openai {version}"[:64]
    return ""
