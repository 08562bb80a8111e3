"""LogFilter through GET /api/v1/logs: every filter selects exactly the right rows, filters
combine with AND, and malformed input is a 400 naming the parameter."""

from __future__ import annotations

import json

import pytest

from tests.analytics.api_helpers import ago, get, ids, write

pytestmark = pytest.mark.django_db

URL = "/api/v1/logs"


@pytest.fixture
def key(api_key):
    return api_key[1]


@pytest.fixture
def logs(workspace, api_key):
    """Four logs with distinct metadata, models, statuses and sizes."""
    return {
        "prod_chat": write(
            workspace,
            api_key[0],
            metadata={"environment": "production", "feature": "chat", "_user": "alice"},
            user="alice",
            model="gpt-4o",
            provider="openai",
            status_code=200,
            success=True,
            cost="0.01",
            total_tokens=100,
            prompt_tokens=80,
            completion_tokens=20,
            latency_ms=100,
            cache_status="HIT",
            trace_id="trace-a",
            span_id="span-1",
        ),
        "prod_search": write(
            workspace,
            api_key[0],
            metadata={"environment": "production", "feature": "search"},
            user="",
            model="gpt-4o-mini",
            provider="openai",
            status_code=429,
            success=False,
            cost="0.02",
            total_tokens=300,
            prompt_tokens=200,
            completion_tokens=100,
            latency_ms=900,
            cache_status="MISS",
            trace_id="trace-b",
            span_id="span-2",
        ),
        "staging": write(
            workspace,
            None,
            metadata={"environment": "staging", "feature": "chat", "_user": "bob"},
            user="bob",
            model="claude-3",
            provider="anthropic",
            status_code=500,
            success=False,
            cost=None,
            total_tokens=50,
            prompt_tokens=40,
            completion_tokens=10,
            latency_ms=2500,
            trace_id="trace-a",
            span_id="span-3",
        ),
        "bare": write(
            workspace,
            api_key[0],
            metadata={},
            user="",
            model="gpt-4o",
            provider="openai",
            status_code=201,
            success=True,
            cost="0.50",
            total_tokens=1000,
            prompt_tokens=600,
            completion_tokens=400,
            latency_ms=40,
            trace_id="trace-c",
        ),
    }


def expect(client, key, logs, names, **params):
    response = get(client, URL, key, **params)
    assert response.status_code == 200, response.json()
    assert ids(response) == {logs[name]["id"] for name in names}


def test_no_filter_returns_the_last_7_days(client, key, logs, workspace):
    old = write(workspace, created_at=ago(days=8))
    response = get(client, URL, key)
    assert ids(response) == {r["id"] for r in logs.values()}
    assert old["id"] not in ids(response)


def test_start_and_end_select_the_window(client, key, workspace):
    inside = write(workspace, created_at=ago(days=20))
    write(workspace, created_at=ago(days=30))
    write(workspace, created_at=ago(days=1))
    response = get(client, URL, key, start=ago(days=21).isoformat(), end=ago(days=19).isoformat())
    assert ids(response) == {inside["id"]}


def test_portkey_time_of_generation_aliases(client, key, workspace):
    inside = write(workspace, created_at=ago(days=20))
    write(workspace, created_at=ago(days=1))
    response = get(
        client,
        URL,
        key,
        time_of_generation_min=ago(days=21).isoformat(),
        time_of_generation_max=ago(days=19).isoformat(),
    )
    assert ids(response) == {inside["id"]}


def test_far_offsets_are_read_as_the_same_instant(client, key, workspace):
    # Python accepts offsets up to +/-23:59, Postgres up to 15:59: the window is taken in UTC.
    from datetime import timedelta
    from datetime import timezone as tz

    inside = write(workspace, created_at=ago(days=20))
    write(workspace, created_at=ago(days=1))
    far = tz(timedelta(hours=23, minutes=21))
    start, end = ago(days=21).astimezone(far).isoformat(), ago(days=19).astimezone(far).isoformat()
    assert ids(get(client, URL, key, start=start, end=end)) == {inside["id"]}
    for graph in ("/api/v1/analytics/graphs/requests", "/api/v1/analytics/groups/users"):
        response = get(client, graph, key, start=start, end=end, user="alice")
        assert response.status_code == 200, response.content


def test_end_alone_defaults_start_to_7_days_before(client, key, workspace):
    inside = write(workspace, created_at=ago(days=12))
    write(workspace, created_at=ago(days=18))
    assert ids(get(client, URL, key, end=ago(days=10).isoformat())) == {inside["id"]}


def test_a_date_with_z_and_a_plain_date_are_accepted(client, key, logs):
    expect(client, key, logs, logs.keys(), start=ago(days=1).strftime("%Y-%m-%dT%H:%M:%SZ"))
    expect(client, key, logs, [], end="2001-01-02", start="2001-01-01")


def test_status_code_list(client, key, logs):
    expect(client, key, logs, ["prod_search", "staging"], status_code="429,500")


def test_success(client, key, logs):
    expect(client, key, logs, ["prod_chat", "bare"], success="true")
    expect(client, key, logs, ["prod_search", "staging"], success="false")


def test_provider_and_model_lists(client, key, logs):
    expect(client, key, logs, ["staging"], provider="anthropic")
    expect(client, key, logs, ["prod_chat", "bare", "staging"], model="gpt-4o,claude-3")


def test_ai_org_model(client, key, logs):
    expect(client, key, logs, ["prod_search", "staging"], ai_org_model="openai__gpt-4o-mini,anthropic__claude-3")


def test_api_key_and_api_key_ids(client, key, logs, api_key):
    expect(client, key, logs, ["prod_chat", "prod_search", "bare"], api_key=str(api_key[0].id))
    expect(client, key, logs, ["prod_chat", "prod_search", "bare"], api_key_ids=f"{api_key[0].id},999")


def test_user_trace_and_span(client, key, logs):
    expect(client, key, logs, ["prod_chat", "staging"], user="alice,bob")
    expect(client, key, logs, ["prod_chat", "staging"], trace_id="trace-a")
    expect(client, key, logs, ["prod_search", "staging"], span_id="span-2,span-3")


def test_cache_status_is_case_insensitive(client, key, logs):
    expect(client, key, logs, ["prod_chat"], cache_status="hit")


def test_ranges(client, key, logs):
    expect(client, key, logs, ["prod_search", "bare"], cost_min="0.015")
    expect(client, key, logs, ["prod_chat", "prod_search"], cost_min="0.01", cost_max="0.02")
    expect(client, key, logs, ["prod_search", "bare"], total_units_min="300")
    expect(client, key, logs, ["prod_chat", "staging"], total_units_max="100")
    expect(client, key, logs, ["prod_search", "bare"], prompt_token_min="200")
    expect(client, key, logs, ["staging", "prod_chat"], prompt_token_max="80")
    expect(client, key, logs, ["bare"], completion_token_min="101")
    expect(client, key, logs, ["staging"], completion_token_max="10")
    expect(client, key, logs, ["prod_search", "staging"], latency_min="500")
    expect(client, key, logs, ["bare", "prod_chat"], latency_max="100")


def test_metadata_equals(client, key, logs):
    expect(client, key, logs, ["prod_chat", "prod_search"], **{"metadata.environment": "production"})


def test_metadata_equals_repeated_requires_both(client, key, logs):
    response = client.get(f"{URL}?metadata.feature=chat&metadata.feature=search", headers={"x-portkey-api-key": key})
    assert response.json()["data"] == []


def test_metadata_not_equal_includes_logs_without_the_key(client, key, logs):
    expect(client, key, logs, ["staging", "bare"], **{"metadata.environment__ne": "production"})


def test_metadata_in(client, key, logs):
    expect(client, key, logs, ["prod_search"], **{"metadata.feature__in": "search,x", "metadata.x__ne": "y"})
    expect(client, key, logs, ["prod_chat", "prod_search", "staging"], **{"metadata.feature__in": "chat,search"})


def test_metadata_exists(client, key, logs):
    expect(client, key, logs, ["prod_chat", "staging"], **{"metadata._user__exists": "true"})
    expect(client, key, logs, ["prod_search", "bare"], **{"metadata._user__exists": "false"})


def test_metadata_json_requires_every_pair(client, key, logs):
    expect(client, key, logs, ["prod_chat"], metadata=json.dumps({"environment": "production", "feature": "chat"}))
    expect(client, key, logs, [], metadata=json.dumps({"environment": "production", "feature": "nope"}))


def test_metadata_keys_with_dots_and_lookup_names(client, key, workspace):
    odd = write(workspace, metadata={"app.region": "eu", "contains": "x"})
    write(workspace, metadata={"app": "eu"})
    assert ids(get(client, URL, key, **{"metadata.app.region": "eu"})) == {odd["id"]}
    assert ids(get(client, URL, key, **{"metadata.contains": "x"})) == {odd["id"]}


def test_filters_combine_with_and(client, key, logs):
    expect(
        client,
        key,
        logs,
        ["prod_search"],
        provider="openai",
        success="false",
        latency_min="100",
        **{"metadata.environment": "production"},
    )


def test_an_empty_value_is_no_filter(client, key, logs):
    expect(client, key, logs, logs.keys(), provider="", **{"metadata.environment": ""})


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start": "yesterday"}, "start"),
        ({"end": "2024-13-01"}, "end"),
        ({"time_of_generation_min": "nope"}, "time_of_generation_min"),
        ({"start": "2024-02-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}, "start"),
        ({"start": "0001-01-01T00:00:00Z"}, "start"),
        ({"status_code": "200,abc"}, "status_code"),
        ({"status_code": "99999"}, "status_code"),
        ({"success": "maybe"}, "success"),
        ({"api_key": "x"}, "api_key"),
        ({"api_key_ids": "99999999999999999999999"}, "api_key_ids"),
        ({"cost_min": "cheap"}, "cost_min"),
        ({"cost_max": "1e999999"}, "cost_max"),
        ({"total_units_min": "1.5x"}, "total_units_min"),
        ({"latency_max": "fast"}, "latency_max"),
        ({"metadata": "{not json"}, "metadata"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"metadata": '{"k": {"nested": 1}}'}, "metadata"),
        ({"metadata.env__exists": "perhaps"}, "metadata.env__exists"),
        ({"metadata.": "x"}, "metadata."),
        ({"metdata.env": "x"}, "metdata.env"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
    ],
)
def test_malformed_input_is_a_400_naming_the_parameter(client, key, params, param):
    response = get(client, URL, key, **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_null_characters_are_a_400(client, key):
    response = get(client, URL, key, provider="a\x00b")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "provider"
    response = get(client, URL, key, **{"metadata.env": "a\x00b"})
    assert response.json()["error"]["param"] == "metadata.env"
