"""Cost of pricing one log, per call: the catalogue path (PriceBook lookup + compute_cost, what
the gateway runs) against the old table path (one (input, output) tuple, two products), in the
same run, plus genai-prices' own calc_price for scale.

    DEBUG=true python bench/bench_pricing.py [--calls N]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from genai_prices import Usage, calc_price  # noqa: E402

from analytics.pricing import COST_QUANTUM, PriceBook, TokenCount, compute_cost  # noqa: E402

_MILLION = Decimal(1_000_000)
OLD_TABLE = {"gpt-4o-mini": (Decimal("0.15"), Decimal("0.60"))}


def old_cost(model: str, prompt: int, completion: int) -> str | None:
    """The previous gateway.pricing._cost (memoised table lookup, two products)."""
    price = OLD_TABLE.get(model)
    if price is None:
        return None
    return str(((price[0] * prompt + price[1] * completion) / _MILLION).quantize(COST_QUANTUM))


def new_cost(book: PriceBook, usage: TokenCount) -> tuple[str | None, str]:
    """What gateway.pricing._price does per request."""
    rates = book.rates(1, "@mock", "gpt-4o-mini")
    if rates is None:
        return None, ""
    return str(compute_cost(rates, usage).quantize(COST_QUANTUM)), rates.version


def per_call_us(fn, calls: int) -> float:
    best = min(timeit.repeat(fn, number=calls, repeat=5))
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    calls = parser.parse_args().calls
    book = PriceBook({})
    plain = TokenCount(420, 180)
    cached = TokenCount(4200, 180, cached_prompt_tokens=3072, reasoning_tokens=64)
    assert new_cost(book, plain)[0] == old_cost("gpt-4o-mini", 420, 180)
    old = per_call_us(lambda: old_cost("gpt-4o-mini", 420, 180), calls)
    new_plain = per_call_us(lambda: new_cost(book, plain), calls)
    new_cached = per_call_us(lambda: new_cost(book, cached), calls)
    usage = Usage(input_tokens=4200, cache_read_tokens=3072, output_tokens=180)
    library = per_call_us(lambda: calc_price(usage, "gpt-4o-mini", provider_id="openai"), max(calls // 50, 100))
    print(f"old table (prompt+completion)        {old:7.2f} us/call")
    print(f"catalogue book (prompt+completion)   {new_plain:7.2f} us/call   ratio {new_plain / old:.2f}x")
    print(f"catalogue book (cached+reasoning)    {new_cached:7.2f} us/call   ratio {new_cached / old:.2f}x")
    print(f"genai-prices calc_price (unmemoised) {library:7.2f} us/call   ratio {library / old:.1f}x")


if __name__ == "__main__":
    main()
