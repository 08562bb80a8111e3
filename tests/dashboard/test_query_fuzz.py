"""Hypothesis over the dashboard's query strings: a workspace member requests every page and
partial with arbitrary text for each parameter the page reads (plus the values that were
500s: ``²``, 5,000 digits, NUL, ``+23:59`` at the ends of the range, a crafted cursor) and
never gets a 5xx. The REST API's equivalent is test_api_schemathesis.py (from /api/schema/);
the dashboard has no schema, so the parameters each page reads are listed here.

Run in both passes: NUL only fails on Postgres, offsets overflow differently on each database."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import orjson
import pytest
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analytics.filters import LogFilter

pytestmark = pytest.mark.django_db

WINDOW = ["range", "start", "end"]
FILTERS = [*LogFilter.base_filters, "metadata.env", "metadata.env__ne", "metadata.env__in", "metadata.env__exists"]
# Page (URL name) -> the query parameters it reads (dashboard/views/).
PAGES = {
    "overview": WINDOW,
    "logs": [*WINDOW, *FILTERS, "add_key", "add_value", "log", "cursor"],
    "log_rows": [*WINDOW, *FILTERS, "cursor"],
    "metadata_values": ["add_key"],
    "log_export": [*WINDOW, *FILTERS, "format"],
    "summary": [*WINDOW, "group", "sort", "dir"],
    "summary_export": [*WINDOW, "group", "sort", "dir", "format"],
    "users": [*WINDOW, "sort", "dir"],
    "errors": WINDOW,
    "metadata_keys": WINDOW,
    "audit": ["object_type", "via", "actor", "action", "before"],
    "settings": ["tab"],
    "settings_keys": ["tab"],
    "settings_providers": ["tab"],
    "alerts": ["rule"],
}


def _cursor(created: str) -> str:
    raw = orjson.dumps([created, "0190a1b2c3d4e5f60718293a4b5c6d7e"])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Values that each reached the database or int() as a 500 at some point.
SPECIAL = [
    "²",
    "٣",
    "1" * 5000,
    "9" * 20,
    "1,²",
    "\x00",
    "a\x00",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00 23:59",
    "2025-01-01T00:00:00\x00",
    _cursor("0001-01-01T00:00:00+23:59"),
    _cursor("9999-12-31T23:59:59-23:59"),
    '{"a": "\\u0000"}',
    '{"\\u0000": "a"}',
    "metadata.\x00",
    "1e999999",
    "nan",
]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # surrogates cannot be URL-encoded
VALUES = st.one_of(st.sampled_from(SPECIAL), TEXT, st.from_regex(r"-?[0-9]{1,25}", fullmatch=True))


@pytest.fixture
def member_client(client, member):
    client.force_login(member)
    return client


def _fetch(client, url: str, partial: bool):
    headers = {"HX-Request": "true", "HX-Target": "results"} if partial else {}
    response = client.get(url, headers=headers)
    if response.status_code == 302 and response["Location"].startswith("/w/"):
        response = client.get(response["Location"], headers=headers)  # logs' add_key folds into the URL
    if response.streaming:
        b"".join(response.streaming_content)  # exports query while streaming
    return response


@pytest.mark.parametrize("page", list(PAGES))
def test_dashboard_pages_never_answer_5xx(member_client, workspace, logs, page):
    path = reverse(f"dashboard:{page}", args=[workspace.slug])
    names = PAGES[page]
    # Any parameter the page reads, sometimes a metadata.<key> of arbitrary text, sometimes a
    # name the page does not know at all.
    name = st.one_of(st.sampled_from(names), TEXT.map(lambda key: f"metadata.{key}"), TEXT)

    def check(params: list[tuple[str, str]], partial: bool) -> None:
        response = _fetch(member_client, f"{path}?{urlencode(params)}", partial)
        assert response.status_code < 500, (params, response.status_code)

    check = given(params=st.lists(st.tuples(name, VALUES), max_size=6), partial=st.booleans())(check)
    for index, value in enumerate(SPECIAL):  # each in every parameter at once; pages and partials alternate
        check = example(params=[(n, value) for n in names], partial=bool(index % 2))(check)
    settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))(check)()
