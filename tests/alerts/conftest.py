"""Fixtures for the alert tests: a real webhook receiver (an HTTP server on loopback that
records every request and answers what the test queues), rules made through the services, and
logs written through write_log_batch so the rollups are filled as in production."""

from __future__ import annotations

from datetime import datetime

import pytest

from analytics.alerts import services as alert_services
from analytics.ingest import write_log_batch
from tests.alerts.receiver import WebhookReceiver
from tests.analytics.records import log_record


@pytest.fixture(scope="module")
def _receiver():
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver(_receiver):
    if _receiver.server is None:  # a test stopped it
        _receiver.start()
    _receiver.reset()
    yield _receiver
    _receiver.reset()


def write_logs(workspace, *records: dict) -> list[dict]:
    """Logs from override dicts (``created_at`` may be a datetime), in one batch."""
    built = []
    for overrides in records:
        overrides = dict(overrides)
        if isinstance(overrides.get("created_at"), datetime):
            overrides["created_at"] = overrides["created_at"].isoformat()
        built.append(log_record(workspace, **overrides))
    write_log_batch(built)
    return built


def make_rule(workspace, **fields):
    """(rule, webhook secret) through the service."""
    defaults = {"name": "Chat spend", "metric": "spend", "threshold": "1", "window": "1h", "cooldown_minutes": 60}
    return alert_services.alert_rule_create(workspace=workspace, **{**defaults, **fields})
