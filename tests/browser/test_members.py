"""Settings > Members in headless chromium: an owner adds a colleague by e-mail, makes them an
admin and removes them through the confirmation page (no script needed, nothing blocked by
the CSP). Screenshotted."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login
from workspaces.models import AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_adds_promotes_and_removes_a_member(page, live_server, demo, django_user_model, shot):
    django_user_model.objects.create_user("eve", "eve@example.com", "eve-pass-123")
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/settings/members/")
    page.get_by_label("Username or e-mail").fill("eve@example.com")
    page.get_by_role("button", name="Add member").click()
    row = page.locator('tr[data-member="eve"]')
    expect(row).to_be_visible()

    row.get_by_label("Role of eve").select_option("admin")
    row.get_by_role("button", name="Change role").click()
    expect(page.locator('tr[data-member="eve"] select')).to_have_value("admin")
    shot(page, "11-settings-members")

    page.locator('tr[data-member="eve"]').get_by_role("link", name="Remove eve").click()
    expect(page.get_by_role("heading", name="Remove eve from Acme?")).to_be_visible()
    shot(page, "12-settings-member-remove")
    page.get_by_role("button", name="Remove eve").click()
    expect(page.locator('tr[data-member="eve"]')).to_have_count(0)
    actions = list(
        AuditEvent.objects.filter(object_type="membership", via="dashboard").values_list("action", flat=True)
    )
    assert sorted(actions) == ["membership.add", "membership.remove", "membership.update"]
