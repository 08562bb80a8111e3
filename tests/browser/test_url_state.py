"""The address bar after a few clicks: each htmx form (Summary's group-by, the custom window,
the audit filters) pushes a URL with each parameter once. The forms used to ask for the
current URL plus their fields, so every change appended another copy of every parameter
(``?range=24h&range=24h&group=model&range=24h&group=provider``): a URL that grows with each
click, and on the audit page a second ``object_type`` the filter then also matched."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _params(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query, keep_blank_values=True)


def _assert_each_once(page) -> dict[str, str]:
    params = _params(page)
    assert all(len(values) == 1 for values in params.values()), page.url
    return {name: values[0] for name, values in params.items()}


def test_changing_the_summary_grouping_keeps_one_of_each_parameter(page, live_server, demo):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/summary/?range=24h&metadata.environment=production")
    for group in ("model", "metadata.feature", "provider"):
        page.get_by_label("Group by").select_option(group)
        expect(page).to_have_url(re.compile(rf"group={re.escape(group)}(&|$)"))
        params = _assert_each_once(page)
        # The filter the page was opened with is still applied, and shown as its chip.
        assert params == {"range": "24h", "metadata.environment": "production", "group": group}
        expect(page.locator('.chip[data-filter="metadata.environment=production"]')).to_be_visible()
    page.reload()
    expect(page.get_by_label("Group by")).to_have_value("provider")


def test_a_second_custom_window_replaces_the_first(page, live_server, demo):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/summary/?range=24h&group=model")
    for start, end in (("2030-01-01T00:00", "2030-01-03T00:00"), ("2030-02-01T00:00", "2030-02-05T00:00")):
        page.locator("details.custom summary").click()
        page.get_by_label("From (UTC)").fill(start)
        page.get_by_label("To (UTC)").fill(end)
        page.get_by_role("button", name="Apply").click()
        expect(page).to_have_url(re.compile(re.escape(start.replace(":", "%3A"))))
        assert _assert_each_once(page) == {"group": "model", "start": start, "end": end}
    expect(page.locator("details.custom summary")).to_contain_text("Feb 01")


def test_audit_filters_replace_their_previous_values(page, live_server, demo):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/audit/")
    object_type = page.get_by_label("Object")
    choices = [v for v in object_type.locator("option").evaluate_all("os => os.map(o => o.value)") if v]
    assert len(choices) >= 2, choices  # the demo's workspace and API key
    for choice in choices[:2]:
        object_type.select_option(choice)
        expect(page).to_have_url(re.compile(rf"object_type={re.escape(choice)}(&|$)"))
        assert _assert_each_once(page)["object_type"] == choice
