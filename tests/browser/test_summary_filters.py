"""Filtered analytics in a real browser: a metadata filter added on the Summary page shows as a
chip, stays in the URL (so the view can be shared and reloaded), and the table's rows plus
"(not set)" add up to the total."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from analytics.ingest import write_log_batch
from tests.analytics.records import log_record
from tests.browser.conftest import login
from workspaces.models import Workspace

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def without_feature(demo):
    """Three more logs that carry no ``feature``: two in production, one in staging."""
    workspace = Workspace.objects.get(slug="acme")
    now = timezone.now()
    write_log_batch(
        [
            log_record(
                workspace, None, created_at=(now - timedelta(minutes=5 + i)).isoformat(), metadata={"environment": env}
            )
            for i, env in enumerate(["production", "production", "staging"])
        ]
    )


def _number(text: str) -> int:
    return int(text.replace(",", "").strip())


def test_a_filtered_summary_keeps_its_filter_and_adds_up(page, live_server, demo, without_feature, shot):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/summary/?range=24h&group=metadata.feature")
    page.get_by_label("Filter by metadata").select_option("environment")
    page.get_by_label("Value", exact=True).fill("production")
    page.get_by_role("button", name="Add filter").click()

    expect(page).to_have_url(re.compile(r"metadata\.environment=production"))
    expect(page.locator('.chip[data-filter="metadata.environment=production"]')).to_be_visible()
    expect(page.locator(".chip")).to_have_count(1)  # the grouping is not a filter
    table = page.locator("#summary-table")
    names = table.locator("tbody tr td:first-child").all_inner_texts()
    assert names == ["chat", "search", "(not set)"]
    counts = [_number(t) for t in table.locator("tbody tr td:nth-child(2)").all_inner_texts()]
    total = _number(table.locator('[data-total="requests"]').inner_text())
    assert counts == [9, 3, 2]  # demo: chat 3 and search 1 in production per cycle of 7, x 3
    assert sum(counts) == total == 14
    shot(page, "30-summary-filtered")

    page.reload()  # the URL alone says what the page shows
    expect(page.locator('.chip[data-filter="metadata.environment=production"]')).to_be_visible()
    expect(table.locator('[data-total="requests"]')).to_have_text("14")
    page.locator('.chip[data-filter="metadata.environment=production"] a').click()
    expect(page).not_to_have_url(re.compile(r"environment=production"))
    expect(page.locator('[data-total="requests"]')).to_have_text("24")
