"""The Policies page in headless chromium: an owner previews a per-user monthly cost budget
against the demo logs, adds it and a per-feature rate limit, and the edit page shows every
user's usage against the limit. No console error or CSP violation on the way. Screenshotted."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from analytics.policies.models import Policy
from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _fill(page, *, name: str, kind: str, limit: str, window: str, per: str) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Limit on").select_option(kind)
    page.get_by_label("Limit", exact=True).fill(limit)
    page.get_by_label("Window", exact=True).fill(window)
    page.get_by_label("Per value of").fill(per)


def test_an_owner_adds_a_user_budget_and_a_feature_rate_limit(page, live_server, demo, shot):
    login(page, live_server)
    page.get_by_role("link", name="Policies").click()
    expect(page.get_by_role("heading", name="Policies", exact=True)).to_be_visible()
    _fill(page, name="User budget", kind="cost", limit="0.001", window="month", per="_user")
    page.get_by_role("button", name="Preview usage").click()
    preview = page.locator("#policy-preview")
    expect(preview.locator('tr[data-value="alice"]')).to_be_visible()
    expect(preview).to_contain_text("Preview")
    page.get_by_role("button", name="Add policy").click()
    expect(page.locator('tr[data-policy="User budget"]')).to_contain_text("per calendar month")
    _fill(page, name="Feature rpm", kind="requests", limit="60", window="minute", per="metadata.feature")
    page.get_by_role("button", name="Add policy").click()
    expect(page.locator('tr[data-policy="Feature rpm"]')).to_contain_text("per minute")
    assert sorted(Policy.objects.values_list("name", flat=True)) == ["Feature rpm", "User budget"]
    page.locator('tr[data-policy="User budget"]').get_by_role("link", name="Edit · usage").click()
    usage = page.locator("#policy-usage")
    for user in ("alice", "bob", "carol"):
        expect(usage.locator(f'tr[data-value="{user}"]')).to_be_visible()
    shot(page, "policies_edit")
