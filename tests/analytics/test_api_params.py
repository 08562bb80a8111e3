"""Query parameters the REST API cannot use are a 400 naming the parameter, never a 500:
integers in other scripts' digits (``²``) or too long for any integer, offsets that leave the
supported range once normalised to UTC, NUL bytes (which Postgres refuses in text), and a
crafted cursor."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.analytics.api_helpers import get, write

pytestmark = pytest.mark.django_db

WINDOWED = [
    "/api/v1/logs",
    "/api/v1/logs/export",
    "/api/v1/analytics/graphs/requests",
    "/api/v1/analytics/groups/users",
    "/api/v1/analytics/groups/metadata/env",
]
BAD_INTEGERS = ["²", "1" * 5000, "9" * 20, "٣"]
LOG_ID = "0190a1b2c3d4e5f60718293a4b5c6d7e"
EDGE_TIMES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00 23:59"]


@pytest.fixture
def key(api_key, workspace):
    write(workspace, api_key[0], metadata={"env": "prod"})
    return api_key[1]


def assert_names(response, param: str) -> None:
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["param"] == param
    assert param in error["message"] or error["message"]


@pytest.mark.parametrize("raw", BAD_INTEGERS)
@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/v1/logs", "limit"),
        ("/api/v1/analytics/groups/models", "page"),
        ("/api/v1/analytics/groups/models", "page_size"),
        ("/api/v1/analytics/groups/models", "current_page"),
        ("/api/v1/analytics/metadata-keys", "top"),
    ],
)
def test_it_refuses_integers_that_are_not_ascii_or_too_long(client, key, url, param, raw):
    assert_names(get(client, url, key, **{param: raw}), param)


@pytest.mark.parametrize("raw", BAD_INTEGERS)
@pytest.mark.parametrize(
    "param",
    ["total_units_min", "prompt_token_max", "completion_token_min", "api_key", "api_key_ids", "status_code"],
)
def test_it_refuses_bad_integer_filters(client, key, param, raw):
    assert_names(get(client, "/api/v1/logs", key, **{param: raw}), param)


@pytest.mark.parametrize("param", ["api_key_ids", "status_code"])
def test_it_refuses_a_bad_item_in_an_integer_list(client, key, param):
    assert_names(get(client, "/api/v1/logs", key, **{param: "200,²"}), param)


@pytest.mark.parametrize("param", ["cost_min", "cost_max", "latency_min", "latency_max"])
@pytest.mark.parametrize("raw", ["1" * 5000, "²", "1e999999", "nan", "-inf"])
def test_it_refuses_numbers_out_of_range(client, key, param, raw):
    assert_names(get(client, "/api/v1/logs", key, **{param: raw}), param)


@pytest.mark.parametrize("raw", EDGE_TIMES)
@pytest.mark.parametrize("param", ["start", "end", "time_of_generation_min", "time_of_generation_max"])
@pytest.mark.parametrize("url", WINDOWED)
def test_it_refuses_times_that_overflow_once_in_utc(client, key, url, param, raw):
    assert_names(get(client, url, key, **{param: raw}), param)


def test_it_still_reads_offsets_within_the_range(client, key):
    response = get(client, "/api/v1/logs", key, start="2020-01-01T00:00:00+23:59", end="2999-12-31T23:59:59-23:59")
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


def _cursor(created: object, log_id: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created, log_id])).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("0001-01-01T00:00:00+23:59", LOG_ID),
        _cursor("9999-12-31T23:59:59-23:59", LOG_ID),
        _cursor("2025-01-01T00:00:00\u0000", LOG_ID),
        _cursor(5, LOG_ID),
        _cursor("2025-01-01T00:00:00Z", "²"),
        "²",
        "\u0000",
    ],
)
def test_it_refuses_a_crafted_cursor(client, key, cursor):
    assert_names(get(client, "/api/v1/logs", key, cursor=cursor), "cursor")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"metadata": '{"a": "\\u0000"}'}, "metadata"),
        ({"metadata": '{"\\u0000": "a"}'}, "metadata"),
        ({"metadata.env": "a\x00"}, "metadata.env"),
        ({"metadata.env\x00": "a"}, "metadata.env\x00"),
        ({"metadata.env__in": "a,\x00"}, "metadata.env__in"),
        ({"model": "gpt\x00"}, "model"),
        ({"provider": "\x00"}, "provider"),
        ({"ai_org_model": "openai__\x00"}, "ai_org_model"),
        ({"user": "\x00"}, "user"),
        ({"trace_id": "\x00"}, "trace_id"),
        ({"cache_status": "\x00"}, "cache_status"),
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/logs", "/api/v1/analytics/groups/models"])
def test_it_refuses_nul_in_text_filters(client, key, url, params, param):
    assert_names(get(client, url, key, **params), param)


@pytest.mark.parametrize(
    ("params", "param"), [({"group_by": "metadata.\x00"}, "group_by"), ({"interval": "\x00"}, "interval")]
)
def test_graph_parameters_refuse_nul(client, key, params, param):
    assert_names(get(client, "/api/v1/analytics/graphs/requests", key, **params), param)


def test_a_metadata_group_key_with_nul_is_a_400(client, key):
    assert_names(get(client, "/api/v1/analytics/groups/metadata/a%00b", key), "key")
