"""GET /v1/analytics/graphs/...: Portkey's paths, parameters and shapes over seeded logs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from workspaces import services

pytestmark = pytest.mark.django_db


def graph(client, path: str, key: str | None, **params):
    headers = {"x-portkey-api-key": key} if key else {}
    return client.get(f"/v1/analytics/graphs/{path}", params, headers=headers)


def busy_point(body: dict) -> dict:
    [point] = [p for p in body["data_points"] if p.get("total") or p.get("avg") or p.get("errors")]
    return point


def test_requests_graph_has_portkeys_shape_and_counts(client, key, logs, window, hour):
    body = graph(client, "requests", key, **window).json()
    assert body["object"] == "analytics-graph"
    assert body["summary"] == {"total": 5}
    assert len(body["data_points"]) == 3  # one per hour of the window
    assert sum(p["total"] for p in body["data_points"]) == 5
    assert busy_point(body) == {"timestamp": hour.strftime("%Y-%m-%dT%H:00:00Z"), "total": 5}


def test_cost_is_in_cents_as_portkey_reports_it(client, key, logs, window):
    body = graph(client, "cost", key, **window).json()
    # $0.0001 + $0.0002 + $0.0003 = $0.0006 = 0.06 cents; the two errors had no price.
    assert body["summary"] == {"total": 0.06, "avg": 0.02}
    assert busy_point(body)["total"] == 0.06


def test_latency_tokens_users_and_errors(client, key, logs, window):
    latency = graph(client, "latency", key, **window).json()["summary"]
    assert latency["avg"] == pytest.approx((100 + 200 + 300 + 50 + 10) / 5)
    assert set(latency) == {"avg", "p50", "p90", "p99"}
    assert latency["p50"] == pytest.approx(100, rel=0.05) and latency["p99"] == pytest.approx(300, rel=0.05)
    tokens = graph(client, "tokens", key, **window).json()["summary"]
    assert (tokens["total"], tokens["avg"]) == (90, 18.0)
    assert graph(client, "users", key, **window).json()["summary"] == {"total": 2}
    assert graph(client, "errors", key, **window).json()["summary"] == {"total": 2}


def test_error_rate_is_a_percentage(client, key, logs, window):
    body = graph(client, "errors/rate", key, **window).json()
    assert body["summary"] == {"rate": 40.0, "errors": 2}
    assert busy_point(body)["rate"] == 40.0


def test_errors_per_status_code(client, key, logs, window):
    body = graph(client, "errors/status-codes", key, **window).json()
    assert body["summary"] == {"total_errors": 2, "unique_error_codes": 2}
    assert body["data_points"] == [{"status_code": 429, "count": 1}, {"status_code": 500, "count": 1}]
    only_500 = graph(client, "errors/status-codes", key, status_code="500", **window).json()
    assert only_500["data_points"] == [{"status_code": 500, "count": 1}]


def test_portkey_filters_are_honoured(client, key, logs, window):
    production = graph(client, "requests", key, metadata=json.dumps({"environment": "production"}), **window)
    assert production.json()["summary"] == {"total": 3}
    assert graph(client, "requests", key, status_code="500,429", **window).json()["summary"] == {"total": 2}
    assert graph(client, "requests", key, ai_org_model="openai__gpt-4o", **window).json()["summary"] == {"total": 1}
    # cost_min/cost_max are cents, as the costs answered: 0.015 cents = $0.00015.
    assert graph(client, "requests", key, cost_min="0.015", **window).json()["summary"] == {"total": 2}
    assert graph(client, "cost", key, cost_max="0.015", **window).json()["summary"]["total"] == 0.01
    assert graph(client, "requests", key, total_units_min="30", **window).json()["summary"] == {"total": 2}


def test_api_key_ids_filter(client, key, logs, window, workspace, api_key):
    other_key, _ = services.api_key_create(workspace=workspace, name="second")
    assert graph(client, "requests", key, api_key_ids=str(api_key[0].id), **window).json()["summary"] == {"total": 5}
    assert graph(client, "requests", key, api_key_ids=str(other_key.id), **window).json()["summary"] == {"total": 0}


def test_the_window_bounds_the_graph(client, key, logs, hour):
    # Windows are whole hours: a start inside the seeded hour still counts it whole.
    inside = (hour + timedelta(minutes=30)).isoformat()
    assert graph(client, "requests", key, time_of_generation_min=inside).json()["summary"] == {"total": 5}
    after = (hour + timedelta(hours=1)).isoformat()
    assert graph(client, "requests", key, time_of_generation_min=after).json()["summary"] == {"total": 0}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"time_of_generation_min": "yesterday"}, "time_of_generation_min"),
        ({"status_code": "abc"}, "status_code"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"cost_min": "cheap"}, "cost_min"),
        ({"virtual_keys": "vk-1"}, "virtual_keys"),
        ({"configs": "pc-" + "1" * 40}, "configs"),  # too long for a config id
        ({"colour": "blue"}, "colour"),
        ({"interval": "minute"}, "interval"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, key, logs, params, param):
    response = graph(client, "requests", key, **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_an_outsiders_key_sees_nothing_of_another_workspace(client, outsider_key, logs, window):
    assert graph(client, "requests", outsider_key, **window).json()["summary"] == {"total": 0}
    response = graph(client, "requests", outsider_key, workspace_slug="acme", **window)
    assert response.status_code == 404


def test_workspace_slug_may_name_the_keys_own_workspace(client, key, logs, window):
    assert graph(client, "requests", key, workspace_slug="acme", **window).json()["summary"] == {"total": 5}


def test_it_needs_a_key_with_the_logs_read_scope(client, logs, workspace, window, owner):
    assert graph(client, "requests", None, **window).status_code == 401
    _, inference_only = services.api_key_create(workspace=workspace, name="gw", scopes=["inference"])
    response = graph(client, "requests", inference_only, **window)
    assert response.status_code == 403
    assert "logs.read" in response.json()["error"]["message"]
    # A dashboard session is not a Portkey credential.
    client.force_login(owner)
    assert graph(client, "requests", None, **window).status_code == 401


def test_unsupported_portkey_paths_are_a_json_404(client, key):
    response = graph(client, "cache/hit-rate", key)
    assert response.status_code == 404
    assert "errors/rate" in response.json()["error"]["message"]
