"""Pair keys in headless chromium: a superuser flags ``environment`` as a pair key in the Django
admin (the one editable field of the metadata key registry, audited), and the owner's Summary
"by feature where environment=production" shows rows with their shares of the filtered total.
The admin pages must load without console errors (no missing favicon, no CSP
violation), like every dashboard page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from analytics.models import MetadataKey
from tests.browser.conftest import PASSWORD, login
from workspaces.models import AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_superuser_flags_a_pair_key_and_the_filtered_summary_adds_up(page, live_server, demo, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    page.goto(f"{live_server.url}/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.goto(f"{live_server.url}/admin/analytics/metadatakey/?q=environment")
    page.locator("#result_list tbody th a", has_text="environment").click()
    expect(page.locator(".field-requests .readonly")).to_have_text("21")
    page.get_by_label("Paired").check()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    assert MetadataKey.objects.get(workspace=demo["workspace"], key="environment").paired
    assert AuditEvent.objects.filter(object_type="metadata_key", via="admin").exists()

    page.context.clear_cookies()
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/summary/?group=metadata.feature&metadata.environment=production")
    # production: chat x 3 and search x 1 per round of the demo's 7 pairs, 3 rounds.
    rows = page.locator("tbody tr").all_inner_texts()
    # production: chat 3 times and search once in each of the demo's 3 rounds; shares of 12.
    assert any(row.startswith("chat\t9\t75.0%") for row in rows), rows
    assert any(row.startswith("search\t3\t25.0%") for row in rows), rows
