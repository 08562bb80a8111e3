"""The gateway's prices: analytics.pricing's PriceBook (overrides over the genai-prices
catalogue), reloaded per process every minute off the event loop. A warm lookup is one dict
hit plus a few Decimal products (bench/bench_pricing.py)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from analytics.pricing import PriceBook, TokenCounts, load_price_book, price_usage
from gateway.auth import TTLCache

Priced = tuple[str | None, str]  # (cost as decimal text or None: no price, price version)
_MISSING = object()


def _load(_: object) -> PriceBook:
    close_old_connections()
    return load_price_book()


price_cache: TTLCache[PriceBook] = TTLCache(sync_to_async(_load), lambda: 60.0)


def price_from_book(book: PriceBook, workspace_id: int, provider: str, model: str, usage: TokenCounts) -> Priced:
    cost, version = price_usage(book, workspace_id, provider, model, usage)
    return (None, "") if cost is None else (str(cost), version)


def cached_price(
    workspace_id: int, provider: str, model: str, usage: TokenCounts, default: object = None
) -> Priced | object:
    """``price_of`` without awaiting when the overrides are cached, else ``default``."""
    book = price_cache.peek("all", _MISSING)
    if book is _MISSING or book is None:
        return default
    return price_from_book(book, workspace_id, provider, model, usage)


async def price_of(workspace_id: int, provider: str, model: str, usage: TokenCounts) -> Priced:
    """(cost, price version) of a call; (None, "") when the model has no price (unknown is not free)."""
    return price_from_book(await price_cache.get("all"), workspace_id, provider, model, usage)
