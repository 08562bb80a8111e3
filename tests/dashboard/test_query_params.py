"""Dashboard query strings a page cannot use: the page says which parameter is wrong and
answers 400, never 500 (``²`` and 5,000-digit integers, ``+23:59`` offsets at the ends of the
range, NUL bytes, which Postgres refuses in text)."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import orjson
import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

EDGE_TIMES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"]
WINDOWED_PAGES = ["overview", "summary", "users", "errors", "metadata_keys", "logs"]


def _get(client, workspace, name, params: dict, **headers):
    url = reverse(f"dashboard:{name}", args=[workspace.slug])
    return client.get(f"{url}?{urlencode(params)}", headers=headers)


def assert_refused(response, param: str) -> None:
    assert response.status_code == 400, response.content[:300]
    assert param in response.content.decode()


@pytest.mark.parametrize("raw", EDGE_TIMES)
@pytest.mark.parametrize("param", ["start", "end"])
@pytest.mark.parametrize("page", WINDOWED_PAGES)
def test_pages_refuse_times_that_overflow_once_in_utc(owner_client, workspace, logs, page, param, raw):
    response = _get(owner_client, workspace, page, {param: raw})
    assert_refused(response, param)
    assert "between 1970 and 9000" in response.content.decode()


@pytest.mark.parametrize("page", WINDOWED_PAGES)
def test_a_partial_refresh_with_an_error_is_a_400_showing_it(owner_client, workspace, logs, page):
    response = _get(owner_client, workspace, page, {"start": "soon"}, HX_Request="true", HX_Target="results")
    assert_refused(response, "start")
    assert "<html" not in response.content.decode()


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"api_key": "²"}, "api_key"),
        ({"api_key_ids": "1,²"}, "api_key_ids"),
        ({"api_key": "1" * 5000}, "api_key"),
        ({"status_code": "200,²"}, "status_code"),
        ({"cost_min": "1" * 5000}, "cost_min"),
        ({"total_units_min": "9" * 20}, "total_units_min"),
        ({"metadata": '{"a": "\\u0000"}'}, "metadata"),
        ({"metadata": '{"\\u0000": "a"}'}, "metadata"),
        ({"metadata.env": "a\x00"}, "metadata.env"),
        ({"metadata.env__in": "a,\x00"}, "metadata.env__in"),
        ({"model": "\x00"}, "model"),
        ({"user": "\x00"}, "user"),
    ],
)
def test_the_logs_page_names_the_filter_it_refuses(owner_client, workspace, logs, params, param):
    response = _get(owner_client, workspace, "logs", {"range": "24h", **params})
    assert_refused(response, param)
    assert response.context["rows"] == []
    assert _get(owner_client, workspace, "log_export", params).status_code == 400


def test_the_logs_page_still_shows_a_chip_for_an_unreadable_key_id(owner_client, workspace, logs):
    response = _get(owner_client, workspace, "logs", {"api_key": "²"})
    assert [chip["label_value"] for chip in response.context["chips"]] == ["²"]


def _cursor(created: str) -> str:
    raw = orjson.dumps([created, "0190a1b2c3d4e5f60718293a4b5c6d7e"])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("created", [*EDGE_TIMES, "2025-01-01T00:00:00\x00"])
def test_load_more_refuses_a_crafted_cursor(owner_client, workspace, logs, created):
    assert_refused(_get(owner_client, workspace, "log_rows", {"cursor": _cursor(created)}), "cursor")


def test_load_more_names_a_bad_filter(owner_client, workspace, logs):
    assert_refused(_get(owner_client, workspace, "log_rows", {"api_key_ids": "²"}), "api_key_ids")


def test_value_suggestions_refuse_nul_in_the_key(owner_client, workspace, logs):
    assert_refused(_get(owner_client, workspace, "metadata_values", {"add_key": "env\x00"}), "add_key")


def test_adding_a_filter_with_nul_lands_on_a_400_naming_it(owner_client, workspace, logs):
    redirect = _get(owner_client, workspace, "logs", {"add_key": "env\x00", "add_value": "prod"})
    assert redirect.status_code == 302
    assert_refused(owner_client.get(redirect["Location"]), "metadata.env")


@pytest.mark.parametrize("name", ["summary", "summary_export"])
def test_summary_refuses_a_group_with_nul(owner_client, workspace, logs, name):
    assert_refused(_get(owner_client, workspace, name, {"group": "metadata.env\x00"}), "group")


def test_summary_export_refuses_an_invalid_window(owner_client, workspace, logs):
    assert_refused(_get(owner_client, workspace, "summary_export", {"start": EDGE_TIMES[0]}), "start")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"before": "²"}, "before"),
        ({"before": "1" * 5000}, "before"),
        ({"before": "9" * 20}, "before"),
        ({"actor": "\x00"}, "actor"),
        ({"object_type": "api_key\x00"}, "object_type"),
        ({"via": "\x00"}, "via"),
        ({"action": "api_key.\x00"}, "action"),
    ],
)
def test_the_audit_page_names_the_parameter_it_refuses(owner_client, workspace, params, param):
    assert_refused(_get(owner_client, workspace, "audit", params), param)
    partial = _get(owner_client, workspace, "audit", params, HX_Target="results")
    assert_refused(partial, param)


def test_the_audit_page_still_pages_by_event_id(owner_client, workspace):
    url = reverse("dashboard:audit", args=[workspace.slug])
    first = owner_client.get(url).context["events"]
    assert first
    older = owner_client.get(url, {"before": str(first[0].id)})
    assert older.status_code == 200
    assert [e.id for e in older.context["events"]] == [e.id for e in first[1:]]
