"""GET /metrics: off without a token, bearer token when set, open with DEBUG only."""

from __future__ import annotations

import pytest

from tests.monitoring.conftest import TOKEN, value

pytestmark = pytest.mark.django_db


def test_it_is_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ENABLED = False
    response = client.get("/metrics")
    assert response.status_code == 404
    assert b"METRICS_TOKEN" in response.content


def test_it_rejects_a_missing_token(client, metrics_on):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_rejects_a_wrong_token(client, metrics_on):
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401


def test_it_serves_prometheus_text_with_the_token(client, metrics_on):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert value(response.content, "portico_database_up") == 1
    assert value(response.content, "portico_log_spool_files") is not None


def test_it_is_open_in_debug_without_a_token(client, settings):
    settings.DEBUG = True
    settings.METRICS_TOKEN = ""
    settings.METRICS_ENABLED = True
    assert client.get("/metrics").status_code == 200


def test_it_refuses_writes(client, metrics_on):
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
