"""What a call cost: the one place prices are resolved and costs computed.

Prices come from the maintained ``genai-prices`` catalogue (its bundled data: no network at
run time). ``ModelPrice`` rows override it for one model, per workspace or for the whole
installation; every write to them goes through ``price_create``/``price_update``/
``price_delete`` so it lands in the audit trail.

Resolution, first match wins: the workspace's override, the installation's override (each by
exact name, else the longest overridden name that prefixes the model plus ``-``, so
``gpt-4o-2024-08-06`` takes ``gpt-4o``'s override), the catalogue (its own model matching). No
match: no price, and the log's cost is NULL, never 0.

The catalogue is read once per model into ``Rates`` (flat per-million rates) and memoised in a
``PriceBook`` (rebuilt when the overrides are reloaded), so a cost is a few Decimal products
(``compute_cost``), not a catalogue search. ``compute_cost`` prices like genai-prices'
``calc_price`` (tests hold it to exactly its answer): each token kind at its own rate, a kind
without a rate of its own counted at its parent's (cached prompt -> input, reasoning ->
output). Counts follow OpenAI's convention: ``prompt_tokens`` includes cached reads, cache
writes and audio input; ``completion_tokens`` includes reasoning and audio output.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple, Protocol

import genai_prices
import orjson
from django.db import transaction
from genai_prices import data_snapshot
from genai_prices import types as catalogue_types

from analytics.models import ModelPrice
from workspaces.audit import Actor, delete_audited, register_audited, save_audited, stored_snapshot
from workspaces.models import AuditEvent, Workspace

CATALOGUE_VERSION = f"genai-prices {genai_prices.__version__}"
COST_QUANTUM = Decimal("0.00000001")  # RequestLog.cost has 8 decimal places
_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
_MISSING = object()
_MEMO_LIMIT = 10_000  # distinct (workspace, provider, model) answers kept per book

# A rate per million tokens: flat, or (base, ((start, rate), ...)) when the catalogue prices
# by prompt size (a prompt above a tier's start pays that tier's rate for all its tokens).
Rate = Decimal | tuple[Decimal, tuple[tuple[int, Decimal], ...]]

OVERRIDE_RATE_FIELDS = (
    "input_per_million",
    "output_per_million",
    "cache_read_per_million",
    "cache_write_per_million",
    "reasoning_per_million",
    "audio_input_per_million",
    "audio_output_per_million",
)
register_audited(
    ModelPrice, object_type="model_price", fields=["workspace_id", "model", *OVERRIDE_RATE_FIELDS, "currency"]
)


class Rates(NamedTuple):
    """One model's prices, resolved; None: that kind is counted at its parent's rate."""

    input: Rate | None
    output: Rate | None
    cache_read: Rate | None = None
    cache_write: Rate | None = None
    audio_input: Rate | None = None
    audio_output: Rate | None = None
    reasoning: Rate | None = None
    per_request: Decimal = _ZERO
    version: str = CATALOGUE_VERSION
    currency: str = "USD"
    flat: bool = True  # no tiered rate: compute_cost's short path applies


class TokenCounts(Protocol):
    """What compute_cost reads (analytics.usage.UsageTracker and RequestLog both have it)."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    audio_prompt_tokens: int
    audio_completion_tokens: int


class TokenCount(NamedTuple):
    """TokenCounts as plain values (seeded data, tests, benchmarks)."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    audio_prompt_tokens: int = 0
    audio_completion_tokens: int = 0


def _at(rate: Rate, prompt_tokens: int) -> Decimal:
    if type(rate) is Decimal:
        return rate
    base, tiers = rate
    for start, tier_rate in reversed(tiers):
        if prompt_tokens > start:
            return tier_rate
    return base


def compute_cost(rates: Rates, usage: TokenCounts) -> Decimal:
    """The cost of ``usage`` at ``rates`` (unrounded; store it with ``.quantize(COST_QUANTUM)``).

    Parts whose kind has a rate are taken out of their parent count (so cached prompt tokens
    are not also charged as input: OpenAI's prompt_tokens includes them). Counts that claim
    more parts than the whole are cut at zero rather than priced negative.
    """
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    if rates.flat and not (
        usage.cached_prompt_tokens
        or usage.cache_write_tokens
        or usage.audio_prompt_tokens
        or usage.reasoning_tokens
        or usage.audio_completion_tokens
    ):
        # Most calls: prompt and completion only, flat rates (the hot path's few microseconds).
        total = _ZERO if rates.input is None else rates.input * prompt
        if rates.output is not None:
            total += rates.output * completion
        return total / _MILLION + rates.per_request
    total = _ZERO
    rest = prompt
    for count, rate in (
        (usage.cached_prompt_tokens, rates.cache_read),
        (usage.cache_write_tokens, rates.cache_write),
        (usage.audio_prompt_tokens, rates.audio_input),
    ):
        if count and rate is not None:
            total += _at(rate, prompt) * count
            rest -= count
    if rates.input is not None and rest > 0:
        total += _at(rates.input, prompt) * rest
    rest = completion
    for count, rate in ((usage.reasoning_tokens, rates.reasoning), (usage.audio_completion_tokens, rates.audio_output)):
        if count and rate is not None:
            total += _at(rate, prompt) * count
            rest -= count
    if rates.output is not None and rest > 0:
        total += _at(rates.output, prompt) * rest
    return total / _MILLION + rates.per_request


# --- The catalogue ------------------------------------------------------------------------

_catalogue_models: dict[tuple[str | None, str], catalogue_types.ModelInfo | None] = {}


def _catalogue_model(model: str, provider: str) -> catalogue_types.ModelInfo | None:
    """The catalogue's entry for ``model``, memoised (a miss scans every model's matcher).
    A built-in provider name (``openai``, ``anthropic``) narrows the search; a workspace
    provider (``@slug``) or a name the catalogue does not know leaves it to the model name."""
    hint = provider.lower() if provider and not provider.startswith("@") else None
    key = (hint, model)
    found = _catalogue_models.get(key, _MISSING)
    if found is not _MISSING:
        return found
    snapshot = data_snapshot.get_snapshot()
    found = None
    for provider_id in (hint, None) if hint else (None,):
        try:
            found = snapshot.find_provider_model(model, None, provider_id, None)[1]
            break
        except LookupError:
            continue
    if len(_catalogue_models) < _MEMO_LIMIT:
        _catalogue_models[key] = found
    return found


def _catalogue_rate(price: catalogue_types.ModelPrice, key: str) -> Rate | None:
    value = getattr(price, key, None)
    if isinstance(value, catalogue_types.TieredPrices):
        return value.base, tuple((tier.start, tier.price) for tier in value.tiers)
    return value


def catalogue_rates(model: str, provider: str = "", at: datetime | None = None) -> Rates | None:
    """The catalogue's rates for ``model`` at ``at`` (default now), or None when it has no
    token prices for it (unknown model, or one priced per image/second only)."""
    if not model:
        return None
    info = _catalogue_model(model, provider)
    if info is None:
        return None
    return _rates_of(info.get_prices(at or datetime.now(UTC)))


def _rates_of(price: catalogue_types.ModelPrice) -> Rates | None:
    rates = Rates(
        input=_catalogue_rate(price, "input_mtok"),
        output=_catalogue_rate(price, "output_mtok"),
        cache_read=_catalogue_rate(price, "cache_read_mtok"),
        cache_write=_catalogue_rate(price, "cache_write_mtok"),
        audio_input=_catalogue_rate(price, "input_audio_mtok"),
        audio_output=_catalogue_rate(price, "output_audio_mtok"),
        reasoning=_catalogue_rate(price, "output_reasoning_mtok"),
        per_request=(price.requests_kcount or _ZERO) / 1000,
    )
    if rates.input is None and rates.output is None:
        return None
    return rates._replace(flat=all(rate is None or type(rate) is Decimal for rate in rates[:7]))


# --- Overrides ----------------------------------------------------------------------------


def override_version(price: ModelPrice) -> str:
    return f"override:{price.pk}@{price.updated_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def override_rates(price: ModelPrice) -> Rates:
    return Rates(
        input=price.input_per_million,
        output=price.output_per_million,
        cache_read=price.cache_read_per_million,
        cache_write=price.cache_write_per_million,
        audio_input=price.audio_input_per_million,
        audio_output=price.audio_output_per_million,
        reasoning=price.reasoning_per_million,
        version=override_version(price),
        currency=price.currency,
    )


# What may follow an overridden name for the override to apply: a date or version stamp
# (gpt-4o-2024-08-06, gpt-4-0613, claude-3-5-sonnet-20241022, ...-latest), not another model's
# name (an override of gpt-4o must not reprice gpt-4o-mini).
_DATED_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4}|\d{8}|latest)")


def price_for(prices: dict[str, Rates], model: str) -> Rates | None:
    """Exact match, else the override of the name ``model`` is a dated version of
    (``gpt-4o-mini-2024-07-18`` takes ``gpt-4o-mini``'s)."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    match = _DATED_SUFFIX.search(model)
    while match is not None:
        base = model[: match.start()]
        if base in prices and _DATED_SUFFIX.fullmatch(model[match.start() :]):
            return prices[base]
        match = _DATED_SUFFIX.search(model, match.start() + 1)
    return None


class PriceBook:
    """The overrides as loaded at one moment, over the catalogue, with every answer memoised
    per (workspace, provider, model): a warm lookup is one dict hit. A new book (the gateway
    reloads overrides every minute) starts a new memo, so price changes are picked up."""

    __slots__ = ("memo", "overrides")

    def __init__(self, overrides: dict[int | None, dict[str, Rates]]) -> None:
        self.overrides = overrides
        self.memo: dict[tuple, Rates | None] = {}

    def rates(self, workspace_id: int | None, provider: str, model: str, at: datetime | None = None) -> Rates | None:
        """The rates that price this model now (or at ``at``: recomputing old logs uses the
        catalogue's price of their time; time-dependent catalogue prices change on the minute)."""
        key = (workspace_id, provider, model) if at is None else (workspace_id, provider, model, _minute(at))
        rates = self.memo.get(key, _MISSING)
        if rates is _MISSING:
            rates = self._resolve(workspace_id, provider, model, at)
            if len(self.memo) < _MEMO_LIMIT:
                self.memo[key] = rates
        return rates

    def _resolve(self, workspace_id: int | None, provider: str, model: str, at: datetime | None) -> Rates | None:
        if workspace_id is not None and workspace_id in self.overrides:
            rates = price_for(self.overrides[workspace_id], model)
            if rates is not None:
                return rates
        rates = price_for(self.overrides.get(None, {}), model)
        if rates is not None:
            return rates
        return catalogue_rates(model, provider, at)


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def load_price_book() -> PriceBook:
    overrides: dict[int | None, dict[str, Rates]] = {}
    for price in ModelPrice.objects.all():
        overrides.setdefault(price.workspace_id, {})[price.model] = override_rates(price)
    return PriceBook(overrides)


def price_usage(
    book: PriceBook, workspace_id: int | None, provider: str, model: str, usage: TokenCounts, at: datetime | None = None
) -> tuple[Decimal | None, str]:
    """(cost rounded to the log's 8 places, or None when the model has no price; the price
    version, '' without a price)."""
    rates = book.rates(workspace_id, provider, model, at)
    if rates is None:
        return None, ""
    return compute_cost(rates, usage).quantize(COST_QUANTUM), rates.version


# --- Audited writes -----------------------------------------------------------------------


def price_create(
    *,
    model: str,
    input_per_million: Decimal,
    output_per_million: Decimal,
    workspace: Workspace | None = None,
    currency: str = "USD",
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    **rates: Decimal | None,
) -> ModelPrice:
    price = ModelPrice(
        workspace=workspace,
        model=model,
        input_per_million=input_per_million,
        output_per_million=output_per_million,
        currency=currency,
        **rates,
    )
    price.full_clean()
    save_audited(price, action="model_price.create", before={}, actor=actor, via=via)
    return price


def price_update(
    *, price: ModelPrice, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, **fields: object
) -> ModelPrice:
    """Change a price (or save a new one the admin built); an unchanged price records nothing."""
    before = stored_snapshot(price)
    for name, value in fields.items():
        setattr(price, name, value)
    price.full_clean()
    action = "model_price.update" if before else "model_price.create"
    save_audited(price, action=action, before=before, actor=actor, via=via, only_if_changed=True)
    return price


def price_delete(*, price: ModelPrice, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    delete_audited(price, action="model_price.delete", actor=actor, via=via)


_FILE_RATES = {
    "input": "input_per_million",
    "output": "output_per_million",
    "cache_read": "cache_read_per_million",
    "cache_write": "cache_write_per_million",
    "reasoning": "reasoning_per_million",
    "audio_input": "audio_input_per_million",
    "audio_output": "audio_output_per_million",
}


def load_pricing(
    *, path: Path, workspace: Workspace | None = None, overwrite: bool = False, via: str = AuditEvent.Via.SYSTEM
) -> int:
    """Insert overrides from a JSON file ``{"prices": [{"model", "input", "output", "cache_read"?,
    ...}]}`` (USD per million tokens) for ``workspace`` (None: the installation); existing
    overrides are kept unless ``overwrite``. Returns how many were written. Raises ValueError
    naming the row of a value that is not a price."""
    count = 0
    existing = {price.model: price for price in ModelPrice.objects.filter(workspace=workspace)}
    rows = orjson.loads(path.read_bytes())["prices"]
    with transaction.atomic():
        for index, row in enumerate(rows):
            try:
                values = {
                    field: Decimal(str(row[key])) for key, field in _FILE_RATES.items() if row.get(key) is not None
                }
            except ArithmeticError:
                raise ValueError(f"prices[{index}]: rates must be decimal numbers") from None
            price = existing.get(row["model"])
            if price is None:
                price_create(model=row["model"], workspace=workspace, via=via, **values)
            elif overwrite:
                price_update(price=price, via=via, **values)
            else:
                continue
            count += 1
    return count
