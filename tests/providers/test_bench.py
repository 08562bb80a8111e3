"""The micro-benchmark's promise, checked with few iterations: translating an OpenAI request
to Anthropic and its answer back adds at most 100 us p50 (measured ~10 us)."""

from bench import bench_providers


def test_translation_adds_at_most_100_us_p50():
    result = bench_providers.summarise(bench_providers.measure(1000))

    assert result["added"]["translation_p50_us"] <= 100
