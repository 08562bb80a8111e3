"""Token counts read from answers (OpenAI, Responses, Anthropic and Gemini shapes) and custom
logs: whatever JSON a provider or client sends as usage, a count is a whole number from 0 to
what the log's columns hold, or the usage is refused with a ValueError naming the count (the
gateway then logs the answer without tokens; a custom log is a 400). Before, 10**30 or 1e308
reached pricing, where Decimal's quantize raised and the log record was dropped."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.pricing import COST_QUANTUM, Rates, compute_cost
from analytics.usage import MAX_TOKEN_COUNT, UsageTracker, token_count
from config.parsing import InvalidParameter
from gateway.providers import AnthropicUsage, GeminiUsage

ODD_COUNTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
USAGE_KEYS = [
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
]
GEMINI_KEYS = ["promptTokenCount", "candidatesTokenCount", "totalTokenCount", "thoughtsTokenCount"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), (0, 0), (12, 12), (12.0, 12), ("12", 12), (MAX_TOKEN_COUNT, MAX_TOKEN_COUNT)],
)
def test_counts_are_taken(value, expected):
    assert token_count(value, "prompt_tokens") == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, 10**30, 1e308, float("inf"), float("nan"), "", "²", [1], {"n": 1}])
def test_anything_else_is_refused_by_name(value):
    with pytest.raises(InvalidParameter) as info:
        token_count(value, "prompt_tokens")
    assert info.value.param == "usage.prompt_tokens"
    assert "whole number from 0 to 2147483647" in info.value.message


@settings(max_examples=300, deadline=None)
@given(
    tracker=st.sampled_from([UsageTracker, AnthropicUsage, GeminiUsage]),
    usage=st.dictionaries(st.sampled_from(USAGE_KEYS + GEMINI_KEYS), ODD_COUNTS, max_size=5),
    details=st.dictionaries(st.sampled_from(["cached_tokens", "audio_tokens", "reasoning_tokens"]), ODD_COUNTS),
)
def test_whatever_usage_says_counts_stay_in_range_and_price_without_error(tracker, usage, details):
    doc = {"usage": {**usage, "prompt_tokens_details": details, "completion_tokens_details": details}}
    doc["usageMetadata"] = usage
    reader = tracker()
    # Refused usage raises ValueError (InvalidParameter for counts): the gateway suppresses it,
    # custom logs answer 400. Nothing else may escape.
    with contextlib.suppress(ValueError):
        reader.read_usage(doc)
    counts = [
        reader.prompt_tokens,
        reader.completion_tokens,
        reader.total_tokens,
        reader.cached_prompt_tokens,
        reader.cache_write_tokens,
        reader.reasoning_tokens,
    ]
    # (Sums of counts, e.g. Anthropic's prompt = input + cache read + cache write, may pass
    # one column's maximum: the writer caps those. What matters is that each is a bounded int.)
    assert all(type(count) is int and 0 <= count <= 4 * MAX_TOKEN_COUNT for count in counts), counts
    rates = Rates(input=Decimal(1000), output=Decimal(1000), version="t")
    assert compute_cost(rates, reader).quantize(COST_QUANTUM) >= 0
