"""Cost of a call from the ModelPrice table, cached per process (prices change rarely)."""

from __future__ import annotations

from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from analytics.models import ModelPrice
from gateway.auth import TTLCache

Prices = dict[str, tuple[Decimal, Decimal]]
_MILLION = Decimal(1_000_000)


def _load_prices(_: object) -> Prices:
    close_old_connections()
    return {p.model: (p.input_per_million, p.output_per_million) for p in ModelPrice.objects.all()}


price_cache: TTLCache[Prices] = TTLCache(sync_to_async(_load_prices), lambda: 60.0)


_MISSING = object()
# price_for's answers for the current price table (reset when the table is reloaded).
_resolved: dict[str, tuple[Decimal, Decimal] | None] = {}
_resolved_for: list[Prices | None] = [None]


def price_for(prices: Prices, model: str) -> tuple[Decimal, Decimal] | None:
    """Exact match, else the longest priced name that prefixes ``model``
    (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    best = max((name for name in prices if model.startswith(name + "-")), key=len, default=None)
    return prices[best] if best else None


def _price(prices: Prices, model: str) -> tuple[Decimal, Decimal] | None:
    """price_for, memoised per price table (the prefix search scans every priced name)."""
    if _resolved_for[0] is not prices:
        _resolved.clear()
        _resolved_for[0] = prices
    price = _resolved.get(model, _MISSING)
    if price is _MISSING:
        price = price_for(prices, model)
        if len(_resolved) < 10_000:
            _resolved[model] = price
    return price


_QUANTUM = Decimal("0.00000001")


def _cost(prices: Prices, model: str, prompt_tokens: int, completion_tokens: int) -> str | None:
    price = _price(prices, model)
    if price is None:
        return None
    cost = (price[0] * prompt_tokens + price[1] * completion_tokens) / _MILLION
    return str(cost.quantize(_QUANTUM))


def cached_cost(model: str, prompt_tokens: int, completion_tokens: int, default: object = None) -> str | object | None:
    """``cost_of`` without awaiting when the price table is cached, else ``default``."""
    prices = price_cache.peek("all", _MISSING)
    if prices is _MISSING or prices is None:
        return default
    return _cost(prices, model, prompt_tokens, completion_tokens)


async def cost_of(model: str, prompt_tokens: int, completion_tokens: int) -> str | None:
    """Cost as a decimal string, or None when the model has no price (unknown is not free)."""
    return _cost(await price_cache.get("all"), model, prompt_tokens, completion_tokens)
