"""GET /v1/analytics/groups/...: Portkey's field names, pagination, ordering and feedback."""

from __future__ import annotations

import json

import pytest

from analytics import services as analytics_services

pytestmark = pytest.mark.django_db


def groups(client, path: str, key: str, **params):
    return client.get(f"/v1/analytics/groups/{path}", params, headers={"x-portkey-api-key": key})


def test_metadata_groups_carry_portkeys_fields(client, key, logs, window, hour):
    body = groups(client, "metadata/environment", key, **window).json()
    assert body["object"] == "list" and body["total"] == 2
    production, staging = body["data"]
    assert production == {
        "metadata_value": "production",
        "requests": 3,
        "cost": 0.06,
        "avg_tokens": 30.0,
        "avg_weighted_feedback": None,
        "requests_with_feedback": 0,
        "last_seen": logs[0]["created_at"].replace("+00:00", "Z"),
        "object": "analytics-group",
    }
    assert (staging["metadata_value"], staging["requests"], staging["cost"]) == ("staging", 2, 0.0)


def test_metadata_groups_average_the_weighted_feedback(client, key, logs, window, workspace):
    alice_traces = [log["trace_id"] for log in logs[:3]]
    analytics_services.feedback_create(workspace=workspace, trace_id=alice_traces[0], value=8, weight=0.5)
    analytics_services.feedback_create(workspace=workspace, trace_id=alice_traces[0], value=2, weight=1.0)
    analytics_services.feedback_create(workspace=workspace, trace_id=alice_traces[1], value=-4, weight=1.0)
    analytics_services.feedback_create(workspace=workspace, trace_id="not-logged", value=10, weight=1.0)
    production = groups(client, "metadata/environment", key, **window).json()["data"][0]
    # Trace 1: (8*0.5 + 2*1) / 2 = 3; trace 2: -4; the two logs average to -0.5.
    assert (production["requests_with_feedback"], production["avg_weighted_feedback"]) == (2, -0.5)


def test_user_groups(client, key, logs, window):
    body = groups(client, "users", key, **window).json()
    assert body["total"] == 2
    assert body["data"] == [
        {"user": "alice", "requests": 3, "cost": 0.06, "object": "analytics-group"},
        {"user": "bob", "requests": 2, "cost": 0.0, "object": "analytics-group"},
    ]


def test_metadata_user_key_groups_by_user(client, key, logs, window):
    body = groups(client, "metadata/_user", key, **window).json()
    assert [(r["metadata_value"], r["requests"]) for r in body["data"]] == [("alice", 3), ("bob", 2)]


def test_ai_model_groups(client, key, logs, window):
    body = groups(client, "ai-models", key, **window).json()
    assert [(r["ai_model"], r["requests"]) for r in body["data"]] == [("gpt-4o-mini", 4), ("gpt-4o", 1)]


def test_pagination_is_portkeys_zero_based_current_page(client, key, logs, window):
    first = groups(client, "users", key, page_size="1", **window).json()
    second = groups(client, "users", key, page_size="1", current_page="1", **window).json()
    assert (first["total"], second["total"]) == (2, 2)
    assert [r["user"] for r in first["data"] + second["data"]] == ["alice", "bob"]
    assert groups(client, "users", key, page_size="1", current_page="2", **window).json()["data"] == []


def test_order_by_and_order_by_type(client, key, logs, window):
    ascending = groups(client, "users", key, order_by="requests", order_by_type="asc", **window).json()
    assert [r["user"] for r in ascending["data"]] == ["bob", "alice"]
    by_value = groups(client, "metadata/environment", key, order_by="metadata_value", order_by_type="desc", **window)
    assert [r["metadata_value"] for r in by_value.json()["data"]] == ["staging", "production"]


def test_filters_narrow_the_groups(client, key, logs, window):
    body = groups(client, "users", key, metadata=json.dumps({"environment": "staging"}), **window).json()
    assert [(r["user"], r["requests"]) for r in body["data"]] == [("bob", 2)]
    errors_only = groups(client, "ai-models", key, status_code="500", **window).json()
    assert [(r["ai_model"], r["requests"]) for r in errors_only["data"]] == [("gpt-4o-mini", 1)]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"current_page": "-1"}, "current_page"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "x"}, "page_size"),
        ({"order_by": "colour"}, "order_by"),
        ({"order_by_type": "up"}, "order_by_type"),
        ({"prompt_slug": "p"}, "prompt_slug"),
        ({"time_of_generation_max": "2020-13-01"}, "time_of_generation_max"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, key, logs, params, param):
    response = groups(client, "users", key, **params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_an_outsiders_key_sees_no_groups(client, outsider_key, logs, window):
    for path in ("users", "ai-models", "metadata/environment"):
        body = groups(client, path, outsider_key, **window).json()
        assert (body["total"], body["data"]) == (0, [])
