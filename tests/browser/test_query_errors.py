"""A query a page cannot use, in the browser: the page answers 400 (dashboard/views/pages.py) and
htmx still swaps that answer in (base.html's responseHandling), so the error naming the
problem appears where the results were instead of the click doing nothing."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Chromium logs every 4xx answer as a console error; these tests ask for exactly one kind.
REFUSED = "the server responded with a status of 400"


def test_a_refused_custom_window_shows_its_error_after_an_htmx_refresh(open_page, live_server, demo):
    page = open_page()
    open_page.problems.allow(REFUSED)
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/summary/?range=24h")
    page.get_by_text("Custom…").click()
    page.get_by_label("From (UTC)").fill("2030-01-02T00:00")
    page.get_by_label("To (UTC)").fill("2030-01-01T00:00")
    with page.expect_response(lambda r: "/summary/" in r.url and r.status == 400):
        page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("The window start must be before its end.")


def test_a_refused_filter_in_the_url_is_shown_on_the_logs_page(open_page, live_server, demo):
    page = open_page()
    open_page.problems.allow(REFUSED)
    login(page, live_server)
    response = page.goto(f"{live_server.url}/w/acme/logs/?range=24h&api_key_ids=1,%C2%B2")
    assert response.status == 400
    expect(page.get_by_role("alert")).to_contain_text("api_key_ids")
    expect(page.locator("#log-rows tr[data-log-id]")).to_have_count(0)
