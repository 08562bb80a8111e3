"""Costs from the genai-prices catalogue, each token kind at its own rate, overrides on top."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import Usage, calc_price, data_snapshot

from analytics import pricing
from analytics.pricing import (
    CATALOGUE_VERSION,
    COST_QUANTUM,
    PriceBook,
    Rates,
    TokenCount,
    catalogue_rates,
    compute_cost,
    load_price_book,
    price_usage,
)
from analytics.usage import UsageTracker

CATALOGUE = PriceBook({})


def catalogue_cost(usage: Usage, model: str, provider: str) -> Decimal:
    return calc_price(usage, model, provider_id=provider).total_price


def test_a_cache_heavy_openai_request_costs_less_by_the_catalogue_ratio():
    uncached = TokenCount(prompt_tokens=10_000, completion_tokens=500)
    cached = TokenCount(prompt_tokens=10_000, completion_tokens=500, cached_prompt_tokens=8_000)

    cost_uncached, version = price_usage(CATALOGUE, 1, "openai", "gpt-4o", uncached)
    cost_cached, _ = price_usage(CATALOGUE, 1, "openai", "gpt-4o", cached)

    expected = catalogue_cost(
        Usage(input_tokens=10_000, cache_read_tokens=8_000, output_tokens=500), "gpt-4o", "openai"
    )
    assert cost_cached == expected.quantize(COST_QUANTUM)
    assert cost_uncached == catalogue_cost(Usage(input_tokens=10_000, output_tokens=500), "gpt-4o", "openai")
    rates = catalogue_rates("gpt-4o", "openai")
    # The 8,000 cached tokens are charged at the cache-read rate instead of the input rate, once.
    assert cost_uncached - cost_cached == 8_000 * (rates.input - rates.cache_read) / 1_000_000
    assert rates.cache_read < rates.input and version == f"genai-prices {genai_prices.__version__}"


def test_reasoning_tokens_are_priced_at_the_output_rate_unless_the_catalogue_says_otherwise():
    plain = TokenCount(prompt_tokens=1_000, completion_tokens=3_000)
    reasoning = TokenCount(prompt_tokens=1_000, completion_tokens=3_000, reasoning_tokens=2_500)
    rates = catalogue_rates("o3-mini", "openai")
    assert rates.reasoning is None  # OpenAI bills reasoning as output
    assert compute_cost(rates, reasoning) == compute_cost(rates, plain)
    assert compute_cost(rates, reasoning) == catalogue_cost(
        Usage(input_tokens=1_000, output_tokens=3_000, output_reasoning_tokens=2_500), "o3-mini", "openai"
    )
    # A rate of its own (here an override's) prices them apart from the rest of the output.
    cheaper = rates._replace(reasoning=rates.output / 2)
    assert compute_cost(cheaper, reasoning) == compute_cost(rates, plain) - 2_500 * rates.output / 2 / 1_000_000


def test_audio_tokens_are_priced_at_audio_rates():
    model = "gpt-audio"
    rates = catalogue_rates(model, "openai")
    assert rates.audio_input is not None and rates.audio_input != rates.input
    usage = TokenCount(
        prompt_tokens=2_000, completion_tokens=900, audio_prompt_tokens=1_500, audio_completion_tokens=600
    )
    expected = catalogue_cost(
        Usage(input_tokens=2_000, input_audio_tokens=1_500, output_tokens=900, output_audio_tokens=600), model, "openai"
    )
    assert compute_cost(rates, usage) == expected


def test_anthropic_cache_reads_and_writes_are_not_double_charged():
    # Anthropic's input_tokens excludes cache reads and writes; the tracker adds them in.
    tracker = UsageTracker()
    tracker.read_usage(
        {
            "model": "claude-3-5-sonnet-20241022",
            "usage": {
                "input_tokens": 100,
                "cache_read_input_tokens": 9_000,
                "cache_creation_input_tokens": 1_000,
                "output_tokens": 400,
            },
        }
    )
    assert (tracker.prompt_tokens, tracker.cached_prompt_tokens, tracker.cache_write_tokens) == (10_100, 9_000, 1_000)
    cost, _ = price_usage(CATALOGUE, 1, "anthropic", tracker.model, tracker)
    expected = catalogue_cost(
        Usage(input_tokens=10_100, cache_read_tokens=9_000, cache_write_tokens=1_000, output_tokens=400),
        "claude-3-5-sonnet-20241022",
        "anthropic",
    )
    assert cost == expected.quantize(COST_QUANTUM)


def test_openai_usage_details_are_read_from_chat_and_responses_shapes():
    chat = UsageTracker()
    chat.read_usage(
        {
            "usage": {
                "prompt_tokens": 2_000,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1_536, "audio_tokens": 20},
                "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 7},
            }
        }
    )
    assert (chat.prompt_tokens, chat.cached_prompt_tokens, chat.audio_prompt_tokens) == (2_000, 1_536, 20)
    assert (chat.reasoning_tokens, chat.audio_completion_tokens, chat.total_tokens) == (128, 7, 2_300)
    responses = UsageTracker()
    responses.read_usage(
        {
            "type": "response.completed",
            "response": {
                "usage": {
                    "input_tokens": 900,
                    "input_tokens_details": {"cached_tokens": 512},
                    "output_tokens": 80,
                    "output_tokens_details": {"reasoning_tokens": 64},
                    "total_tokens": 980,
                }
            },
        }
    )
    assert (responses.prompt_tokens, responses.cached_prompt_tokens, responses.reasoning_tokens) == (900, 512, 64)


@pytest.mark.parametrize("prompt", [1_000, 300_000], ids=["small-prompt", "above-tiers"])
def test_every_catalogue_model_is_priced_like_genai_prices(prompt):
    """compute_cost (the fast path) against genai-prices' own calc_price, for every model of
    the catalogue, with every token kind we capture (tiered prices included)."""
    usage = TokenCount(
        prompt_tokens=prompt,
        completion_tokens=5_000,
        cached_prompt_tokens=prompt // 2,
        cache_write_tokens=prompt // 20,
        reasoning_tokens=2_000,
        audio_prompt_tokens=300,
        audio_completion_tokens=100,
    )
    # Units we do not capture, stated as 0 (genai-prices refuses to guess overlapping ones).
    zeros = dict.fromkeys(
        ("cache_audio_read_tokens", "input_image_tokens", "cache_image_read_tokens", "cache_write_1h_tokens"), 0
    )
    now, compared = datetime.now(UTC), 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            price = model.get_prices(now)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = price.calc_price(
                        Usage(
                            input_tokens=usage.prompt_tokens,
                            cache_read_tokens=usage.cached_prompt_tokens,
                            cache_write_tokens=usage.cache_write_tokens,
                            input_audio_tokens=usage.audio_prompt_tokens,
                            output_tokens=usage.completion_tokens,
                            output_reasoning_tokens=usage.reasoning_tokens,
                            output_audio_tokens=usage.audio_completion_tokens,
                            **zeros,
                        )
                    )["total_price"]
            except ValueError:
                continue  # usage genai-prices itself refuses for this model
            rates = pricing._rates_of(price)
            if rates is None:
                continue
            assert compute_cost(rates, usage) == expected, (provider.id, model.id)
            compared += 1
    assert compared > 2000


def test_an_unknown_model_has_no_price_not_a_zero_one():
    assert price_usage(CATALOGUE, 1, "@mock", "my-finetune-7b", TokenCount(100, 10)) == (None, "")
    assert price_usage(CATALOGUE, 1, "openai", "", TokenCount(100, 10)) == (None, "")


def test_dated_names_and_workspace_providers_find_the_catalogue_model():
    cost, version = price_usage(CATALOGUE, 1, "@mock", "gpt-4o-mini-2024-07-18", TokenCount(1_000_000, 0))
    assert cost == catalogue_rates("gpt-4o-mini").input and version == CATALOGUE_VERSION


@pytest.mark.django_db
def test_a_workspace_override_beats_the_installation_one_which_beats_the_catalogue(workspace, other_workspace):
    everyone = pricing.price_create(model="gpt-4o", input_per_million=Decimal(1), output_per_million=Decimal(2))
    ours = pricing.price_create(
        model="gpt-4o",
        workspace=workspace,
        input_per_million=Decimal("0.5"),
        output_per_million=Decimal(1),
        cache_read_per_million=Decimal("0.1"),
    )
    book = load_price_book()
    usage = TokenCount(prompt_tokens=1_000_000, completion_tokens=1_000_000, cached_prompt_tokens=500_000)
    # Dated names take the override of their base name.
    assert price_usage(book, workspace.pk, "openai", "gpt-4o-2024-08-06", usage) == (
        Decimal("1.3"),  # 0.5M * 0.5 + 0.5M * 0.1 (cached) + 1M * 1
        f"override:{ours.pk}@{ours.updated_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
    )
    # No cache-read rate on the installation's override: cached tokens at its input rate.
    cost, version = price_usage(book, other_workspace.pk, "openai", "gpt-4o", usage)
    assert (cost, version.split("@")[0]) == (Decimal(3), f"override:{everyone.pk}")
    assert price_usage(book, workspace.pk, "openai", "gpt-4o-mini", usage)[1] == CATALOGUE_VERSION


def test_a_warm_lookup_is_memoised_per_book():
    book = PriceBook({None: {"m": Rates(input=Decimal(1), output=Decimal(2), version="override:1@x")}})
    assert book.rates(1, "openai", "m") is book.rates(1, "openai", "m")
    assert (1, "openai", "m") in book.memo
