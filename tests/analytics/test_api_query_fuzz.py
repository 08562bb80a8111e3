"""Hypothesis over the REST API's query strings with arbitrary text, where
test_api_schemathesis.py only sends what the schema allows (an integer-typed ``limit`` is never
``²`` there). Every answer is below 500, and a 400 names the parameter in ``error.param``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analytics.filters import LogFilter
from tests.analytics.api_helpers import key_headers, write
from tests.dashboard.test_query_fuzz import SPECIAL, TEXT, VALUES

pytestmark = pytest.mark.django_db

FILTERS = [*LogFilter.base_filters, "metadata.env", "metadata.env__in", "metadata.env__exists", "workspace"]
GROUPS = [*FILTERS, "ordering", "page", "page_size", "current_page"]
ENDPOINTS = {
    "/api/v1/logs": [*FILTERS, "limit", "cursor"],
    "/api/v1/logs/export": [*FILTERS, "format"],
    "/api/v1/analytics/graphs/requests": [*FILTERS, "interval", "group_by"],
    "/api/v1/analytics/groups/models": GROUPS,
    "/api/v1/analytics/groups/metadata/env": GROUPS,
    "/api/v1/analytics/metadata-keys": ["top", "workspace"],
}


@pytest.fixture
def headers(workspace, api_key):
    write(workspace, api_key[0], metadata={"env": "prod"})
    return key_headers(api_key[1])


@pytest.mark.parametrize("url", list(ENDPOINTS))
def test_the_api_never_answers_5xx_to_any_query_text(client, headers, url):
    names = ENDPOINTS[url]
    name = st.one_of(st.sampled_from(names), TEXT.map(lambda key: f"metadata.{key}"))

    def check(params: list[tuple[str, str]]) -> None:
        query = {}
        for param, value in params:
            query.setdefault(param, []).append(value)
        response = client.get(url, query, headers=headers)
        if response.streaming:
            b"".join(response.streaming_content)
        assert response.status_code < 500, (params, response.status_code)
        if response.status_code == 400:
            assert response.json()["error"]["param"], params

    check = given(params=st.lists(st.tuples(name, VALUES), max_size=5))(check)
    for value in SPECIAL:
        check = example(params=[(n, value) for n in names if n != "workspace"])(check)
    settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))(check)()
