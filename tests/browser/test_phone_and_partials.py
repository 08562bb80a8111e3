"""What a new user sees outside the happy path of a laptop: every dashboard page on a 375 px
phone screen (nothing wider than the screen, so nothing to scroll sideways), and a partial URL
opened by hand (a response without the base template's icon link, where the browser asks for
/favicon.ico: a 404 there was a console error). Screenshotted."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = 375
# Every page the sidebar and the settings tabs link to, with a log's detail panel open.
PAGES = [
    "",
    "logs/?range=24h",
    "summary/?range=24h",
    "summary/?range=24h&group=metadata.feature",
    "users/?range=24h",
    "errors/?range=24h",
    "metadata-keys/?range=24h",
    "alerts/",
    "policies/",
    "audit/",
    "settings/",
    "settings/keys/",
    "settings/providers/",
    "settings/configs/",
    "settings/prices/",
    "settings/members/",
]

# Elements that stick out of the right edge of the page itself (not inside a box that scrolls).
WIDER_THAN_SCREEN = """() => {
  const clipped = el => { for (let n = el.parentElement; n; n = n.parentElement) {
    if (getComputedStyle(n).overflowX !== "visible") return true; } return false; };
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter(el => el.getBoundingClientRect().right > width + 0.5 && !clipped(el))
    .slice(0, 5).map(el => el.tagName + "." + el.className + ": " + (el.textContent || "").trim().slice(0, 40));
}"""


def test_every_page_fits_a_phone_screen(open_page, live_server, demo, shot):
    page = open_page(width=PHONE, height=800)
    login(page, live_server)
    for path in [*PAGES, f"logs/?range=24h&log={demo['records'][0]['id']}"]:
        page.goto(f"{live_server.url}/w/acme/{path}")
        sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], (path, sizes, page.evaluate(WIDER_THAN_SCREEN))
        name = path.split("?")[0].strip("/").replace("/", "-") or "overview"
        shot(page, f"60-phone-{name}")
    # The navigation is still there: every sidebar link on screen, above the page.
    nav = page.get_by_role("navigation", name="Pages")
    for link in ("Overview", "Logs", "Summary", "Settings", "Audit log"):
        expect(nav.get_by_role("link", name=link)).to_be_in_viewport()


def test_a_partial_opened_by_hand_logs_no_console_error(open_page, live_server, demo):
    # A fresh browser: the first page without <link rel="icon"> makes it ask for /favicon.ico
    # (a request of the browser's own, which Playwright does not show as a page request). The
    # open_page fixture fails this test on the console error a 404 there logs.
    page = open_page()
    login(page, live_server)
    response = page.goto(f"{live_server.url}/w/acme/logs/values/?add_key=feature")
    assert response.status == 200
    page.wait_for_load_state("networkidle")
    assert page.request.get(f"{live_server.url}/favicon.ico").status == 204


def test_more_log_rows_typed_into_the_address_bar_open_the_logs_page(open_page, live_server, demo):
    # The "load more" fragment is a bare <tr> list; a browser navigating to it (Chromium sends
    # Sec-Fetch-Dest: document) is taken to the Logs page with the same filters instead.
    page = open_page()
    login(page, live_server)
    page.goto(f"{live_server.url}/w/acme/logs/rows/?range=24h&cursor=abc")
    page.wait_for_load_state("networkidle")
    assert page.url == f"{live_server.url}/w/acme/logs/?range=24h"
    expect(page.get_by_role("heading", name="Logs", level=1)).to_be_visible()
