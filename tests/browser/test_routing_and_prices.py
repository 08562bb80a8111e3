"""In chromium: a config-routed log found with the Logs page's Config menu shows its Routing
block (config, answering target, every try), and Settings > Prices adds a price override."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from analytics.ingest import write_log_batch
from analytics.models import ModelPrice
from tests.analytics.records import log_record
from tests.browser.conftest import login
from workspaces import services

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ATTEMPTS = [
    {"target": "config.targets[0]", "provider": "@mock", "status": 503, "ms": 41.5},
    {"target": "config.targets[1]", "provider": "@backup", "status": 200, "ms": 230.0},
]


def test_a_routed_log_by_its_config_and_a_price_override(page, live_server, demo, shot):
    workspace = demo["workspace"]
    services.provider_create(workspace=workspace, slug="backup", base_url="https://upstream.example.com/v1")
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@mock"}, {"provider": "@backup"}]}
    saved = services.config_create(workspace=workspace, slug="resilient", config=config)
    routed = log_record(
        workspace,
        demo["api_key"],
        created_at=(timezone.now() - timedelta(minutes=3)).isoformat(),
        provider="@backup",
        config_id=saved.public_id,
        last_used_option_index="config.targets[1]",
        attempts=ATTEMPTS,
    )
    write_log_batch([routed])

    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/logs/?range=24h")
    page.get_by_label("Config", exact=True).select_option(saved.public_id)
    expect(page).to_have_url(re.compile(rf"config={saved.public_id}"))
    rows = page.locator("#log-rows tr[data-log-id]")
    expect(rows).to_have_count(1)
    rows.first.locator("td").nth(3).click()
    routing = page.locator("#routing")
    expect(routing).to_contain_text("config.targets[1]")
    expect(routing.get_by_role("link", name="resilient")).to_be_visible()
    expect(routing.locator("#attempts tbody tr")).to_have_count(2)
    expect(routing.locator("#attempts tbody tr").first).to_contain_text("503")
    shot(page, "19-log-routing")

    page.goto(f"{live_server.url}/w/acme/settings/prices/")
    page.get_by_label("Model", exact=True).fill("gpt-4o")
    page.get_by_label("Input", exact=True).fill("2")
    page.get_by_label("Output", exact=True).fill("8")
    page.get_by_label("Cached input (cache read)").fill("0.5")
    page.get_by_role("button", name="Add override").click()
    expect(page.locator("#prices-table")).to_contain_text("gpt-4o")
    expect(page.locator("#prices-table")).to_contain_text("2.5 / 10")  # the catalogue's rates beside it
    assert ModelPrice.objects.get(workspace=workspace).cache_read_per_million == 0.5
    shot(page, "20-settings-prices")
