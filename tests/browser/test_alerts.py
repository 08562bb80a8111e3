"""The Alerts page in headless chromium: an owner creates a rule, the rule fires against a real
webhook receiver, the page shows the firing and the delivery, and test-send shows what the
receiver answered. No console error or CSP violation on the way. Screenshotted."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connections
from playwright.sync_api import expect

from analytics.alerts import delivery, evaluation
from analytics.alerts.models import AlertRule
from analytics.ingest import write_log_batch
from tests.alerts.receiver import WebhookReceiver
from tests.analytics.records import log_record
from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def scheduler_round() -> None:
    """One evaluation and delivery round, in a thread of its own as the scheduler runs it (this
    thread carries Playwright's event loop, where the webhook client's async_to_sync may not run)."""

    def run() -> None:
        try:
            evaluation.evaluate_all()
            delivery.send_due()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def test_an_owner_creates_a_rule_sees_it_fire_and_test_sends(page, live_server, demo, receiver, shot):
    login(page, live_server)
    page.get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("heading", name="Alerts", exact=True)).to_be_visible()
    page.get_by_label("Name").fill("Chat spend")
    page.get_by_label("Metric").select_option("spend")
    page.get_by_label("Threshold").fill("1")
    page.get_by_label("Window").fill("1h")
    page.get_by_label("Scope").fill("metadata.feature=chat")
    page.get_by_label("Webhook URLs").fill(receiver.url)
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_role("heading", name="Alert rule “Chat spend” created")).to_be_visible()
    secret = page.locator("#new-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    row = page.locator('tr[data-rule="Chat spend"]')
    expect(row).to_contain_text("Spend > 1 USD")
    expect(row.locator(".pill")).to_have_text("ok")
    shot(page, "20-alerts-created")

    # Chat spend of $2.50 in the last hour, then one scheduler round.
    write_log_batch([log_record(demo["workspace"], cost="2.5", metadata={"feature": "chat"})])
    scheduler_round()
    [received] = receiver.requests
    assert received.signature_valid(secret) and received.json["value"] > 2.5

    page.goto(page.url.split("?")[0])
    expect(row.locator(".pill")).to_have_text("firing")
    expect(page.locator("#events-table tbody tr").first).to_contain_text("fired")
    delivered = page.locator("#deliveries-table tbody tr").first
    expect(delivered).to_contain_text("delivered")
    expect(delivered).to_contain_text("200")
    expect(delivered).to_contain_text(receiver.url)

    row.get_by_role("button", name="Test send").click()
    result = page.locator(f"#test-result-{AlertRule.objects.get().pk}")
    expect(result).to_contain_text(re.compile(r"answered 200 in \d+ ms"))
    assert [r.json["type"] for r in receiver.requests] == ["alert.fired", "alert.test"]
    shot(page, "21-alerts-firing")
