"""The dashboard as a person uses it, in headless chromium: log in, filter logs by two metadata
pairs, open a log, group the summary by a metadata key, create and revoke an API key, and get
the schema error for invalid default metadata. Every page is screenshotted."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login
from workspaces import services
from workspaces.models import ApiKey, AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _row_ids(page) -> set[str]:
    return set(page.locator("#log-rows tr[data-log-id]").evaluate_all("rows => rows.map(r => r.dataset.logId)"))


def _expected(records, **metadata) -> set[str]:
    return {r["id"] for r in records if all(r["metadata"].get(k) == v for k, v in metadata.items())}


def test_login_shows_the_overview_and_every_page_renders(page, live_server, demo, shot):
    page.goto(f"{live_server.url}/w/acme/")
    expect(page).to_have_url(re.compile(r"/login/\?next="))
    shot(page, "00-login")
    login(page, live_server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator('[data-kpi="requests"]')).to_have_text("21")
    expect(page.locator(".chart canvas").first).to_be_visible()
    shot(page, "01-overview")
    for name, path, heading in [
        ("02-logs", "logs/", "Logs"),
        ("03-summary", "summary/?group=metadata.environment", "Summary"),
        ("04-users", "users/", "Users"),
        ("05-errors", "errors/", "Errors"),
        ("06-metadata-keys", "metadata-keys/", "Metadata keys"),
        ("07-audit", "audit/", "Audit log"),
        ("08-settings", "settings/", "Settings"),
        ("09-settings-keys", "settings/keys/", "Settings"),
        ("10-settings-providers", "settings/providers/", "Settings"),
    ]:
        page.goto(f"{live_server.url}/w/acme/{path}")
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        shot(page, name)


def test_keyboard_users_reach_the_content(page, live_server, demo):
    login(page, live_server)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()


def test_filter_logs_by_two_metadata_pairs(page, live_server, demo, shot):
    records = demo["records"]
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/logs/?range=24h")
    assert _row_ids(page) == {r["id"] for r in records}

    page.get_by_label("Metadata key").select_option("environment")
    expect(page.locator("#value-options option[value=production]")).to_have_count(1)  # suggestions
    page.get_by_label("Value", exact=True).fill("production")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".chip")).to_have_count(1)
    assert _row_ids(page) == _expected(records, environment="production")

    page.get_by_label("Metadata key").select_option("feature")
    page.get_by_label("Value", exact=True).fill("chat")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".chip")).to_have_count(2)
    expected = _expected(records, environment="production", feature="chat")
    assert len(expected) == 9
    expect(page.locator("#log-rows tr[data-log-id]")).to_have_count(len(expected))
    assert _row_ids(page) == expected
    query = parse_qs(urlsplit(page.url).query)
    assert query["metadata.environment"] == ["production"] and query["metadata.feature"] == ["chat"]
    shot(page, "11-logs-filtered")

    # The filters live in the URL: back goes to one pair, a reload keeps both.
    page.go_back()
    expect(page.locator(".chip")).to_have_count(1)
    assert _row_ids(page) == _expected(records, environment="production")
    page.go_forward()
    expect(page.locator(".chip")).to_have_count(2)
    page.reload()
    assert _row_ids(page) == expected

    # Removing a chip drops just that filter.
    page.get_by_role("link", name="Remove filter environment = production").click()
    expect(page.locator(".chip")).to_have_count(1)
    assert _row_ids(page) == _expected(records, feature="chat")


def test_clicking_a_metadata_chip_adds_it_as_a_filter(page, live_server, demo):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/logs/?range=24h")
    page.locator('#log-rows a.mchip[data-meta="feature=search"]').first.click()
    expect(page.locator(".chip")).to_have_count(1)
    assert _row_ids(page) == _expected(demo["records"], feature="search")
    assert "metadata.feature=search" in page.url


def test_open_a_log_detail(page, live_server, demo, shot):
    record = demo["records"][2]
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/logs/?range=24h")
    page.locator(f'#log-rows tr[data-log-id="{record["id"]}"] td').nth(3).click()
    panel = page.locator("#detail")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text(record["trace_id"])
    expect(panel).to_contain_text('"content": "Hello there"')  # pretty-printed body
    expect(panel.locator("dl.metadata")).to_contain_text("staging")
    expect(panel.locator('dt:text-is("Finish reason") + dd')).to_have_text("stop")
    assert f"log={record['id']}" in page.url
    shot(page, "12-log-detail")
    # The URL opens the same panel on its own.
    page.reload()
    expect(page.locator("#detail")).to_contain_text(record["trace_id"])
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()


def test_group_the_summary_by_a_metadata_key(page, live_server, demo, shot):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/summary/?range=24h&group=model")
    page.get_by_label("Group by").select_option("metadata.feature")
    expect(page).to_have_url(re.compile(r"group=metadata\.feature"))
    table = page.locator("#summary-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    values = table.locator("tbody tr td:first-child").all_inner_texts()
    assert values == ["chat", "search", "summarize"]
    expect(table.locator("tbody tr").first).to_contain_text("12")  # chat: 4 per cycle x 3
    page.get_by_role("link", name="Avg latency").click()
    expect(page).to_have_url(re.compile(r"sort=avg_latency"))
    expect(page.locator(".chart canvas")).to_be_visible()
    shot(page, "13-summary-by-feature")


def test_create_and_revoke_an_api_key(page, live_server, demo, shot):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/settings/keys/")
    page.get_by_label("Name").fill("ci-pipeline")
    page.locator("#id_default_metadata").fill('{"team": "platform"}')
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key")
    expect(secret).to_be_visible()
    full_key = secret.inner_text().strip()
    key = ApiKey.objects.get(name="ci-pipeline")
    assert full_key.startswith(key.prefix) and len(full_key) == 51
    shot(page, "14-key-created")

    page.reload()  # re-posts the form: no second key, and the key is not shown again
    expect(page.get_by_text("That form was already submitted")).to_be_visible()
    expect(page.locator("#new-key")).to_have_count(0)
    assert ApiKey.objects.filter(name="ci-pipeline").count() == 1
    page.goto(f"{live_server.url}/w/acme/settings/keys/")
    assert full_key not in page.content()
    assert _api_status(live_server, full_key) == 200

    # Revoke asks first; cancelling keeps the key working.
    questions = []

    def answer(dialog, accept: bool) -> None:
        questions.append((dialog.type, dialog.message))
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    row = page.locator(f'tr[data-key-prefix="{key.prefix}"]')
    row.get_by_role("button", name="Revoke ci-pipeline").click()
    expect(row.locator(".pill")).to_have_text("active")
    assert questions == [("confirm", "Revoke ci-pipeline? Clients using it stop working within seconds.")]
    page.reload()
    expect(page.locator(f'tr[data-key-prefix="{key.prefix}"] .pill')).to_have_text("active")
    key.refresh_from_db()
    assert key.is_active and _api_status(live_server, full_key) == 200
    assert not AuditEvent.objects.filter(action="api_key.revoke").exists()

    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    row.get_by_role("button", name="Revoke ci-pipeline").click()
    expect(row.locator(".pill")).to_have_text("revoked")
    assert len(questions) == 2
    key.refresh_from_db()
    assert not key.is_active
    assert _api_status(live_server, full_key) == 401
    assert AuditEvent.objects.filter(action="api_key.revoke", via="dashboard").exists()
    shot(page, "15-key-revoked")


def _api_status(live_server, full_key: str) -> int:
    """What the logs API answers a client holding this key (no browser session involved)."""
    request = urllib.request.Request(f"{live_server.url}/api/v1/logs", headers={"x-portkey-api-key": full_key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_workspace_switcher_opens_the_other_workspace(page, live_server, demo):
    services.workspace_create(slug="beta", name="Beta Labs", owner=demo["user"])
    login(page, live_server)  # two workspaces: the chooser
    page.get_by_role("link", name="Acme").click()
    expect(page).to_have_url(f"{live_server.url}/w/acme/")
    expect(page.locator('[data-kpi="requests"]')).to_have_text("21")

    page.get_by_label("Workspace", exact=True).select_option(label="Beta Labs")
    expect(page).to_have_url(f"{live_server.url}/w/beta/")
    expect(page).to_have_title("Overview · Beta Labs")
    expect(page.get_by_label("Workspace", exact=True)).to_have_value("/w/beta/")
    expect(page.locator("#empty-title")).to_be_visible()  # Beta has no traffic yet
    expect(page.locator('[data-kpi="requests"]')).to_have_count(0)


def test_workspace_metadata_shows_the_schema_error(page, live_server, demo, shot):
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/settings/")
    page.locator("#id_metadata_schema").fill(
        '{"type": "object", "properties": {"environment": {"type": "string", "enum": ["production", "staging"]}}}'
    )
    page.locator("#id_default_metadata").fill('{"environment": "prod"}')
    live = page.locator("#live-validation")
    expect(live).to_contain_text("would be rejected")  # live, while typing
    expect(live).to_contain_text("'prod' is not one of")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".errorlist")).to_contain_text("'prod' is not one of")
    expect(page.get_by_text("Saved.")).to_have_count(0)
    shot(page, "16-settings-schema-error")

    page.locator("#id_default_metadata").fill('{"environment": "staging"}')
    expect(live).to_contain_text("Valid")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    demo["workspace"].refresh_from_db()
    assert demo["workspace"].default_metadata == {"environment": "staging"}


def test_dark_theme_and_a_laptop_screen(open_page, live_server, demo, shot):
    page = open_page(width=1280, height=720, color_scheme="dark")
    login(page, live_server)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 19, 26)"  # the dark palette's --bg
    shot(page, "17-overview-dark-1280")
    for path in ("logs/", "summary/", "metadata-keys/", "settings/keys/"):
        page.goto(f"{live_server.url}/w/acme/{path}")
        # Nothing spills sideways on a laptop screen (wide tables scroll inside their panel).
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
    shot(page, "18-settings-keys-dark-1280")
