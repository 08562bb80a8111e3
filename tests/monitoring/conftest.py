"""Metrics fixtures and helpers. The test with a real Prometheus scraping the live gateway is
tests/gateway/test_prometheus.py: the live server is one per test process (its fixtures live in
tests/gateway/conftest.py; a second server on the same ASGI app would share its upstream client
across event loops)."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics.prometheus import render_metrics

TOKEN = "test-metrics-token"


@pytest.fixture
def metrics_on(settings):
    """Metrics as an operator turns them on: a token and two metadata keys as labels."""
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ENABLED = True
    settings.METRICS_METADATA_LABELS = ["environment", "feature"]
    return settings


@pytest.fixture
def unique() -> str:
    """A label value no other test uses: counters add up across a test run's processes."""
    return f"t-{uuid.uuid4().hex[:10]}"


def samples(text: str | bytes) -> list:
    if isinstance(text, bytes):
        text = text.decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str | bytes, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``; None if none."""
    found = [s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()]
    return sum(found) if found else None


def scrape() -> str:
    body, _ = render_metrics()
    return body.decode()
