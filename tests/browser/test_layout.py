"""Laptop screens (1280 and 1440 px wide): figures stay inside their boxes and the columns a
person reads stay in view. Each check compares what the browser laid out (bounding boxes,
scrollWidth vs clientWidth), and each page is screenshotted for a human look."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from analytics.ingest import write_log_batch
from tests.analytics.records import log_record
from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [1280, 1440]

# True when the element's content is not cut or spilled sideways: nothing scrolls inside it and
# its box lies within its parent's.
FITS = """el => {
  const box = el.getBoundingClientRect(), parent = el.parentElement.getBoundingClientRect();
  return {
    scroll: el.scrollWidth, client: el.clientWidth,
    inside: box.left >= parent.left - 0.5 && box.right <= parent.right + 0.5,
  };
}"""


# The words of an element that the browser split across two lines ("tota" / "l").
BROKEN_WORDS = """el => {
  const broken = [], walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
  return broken;
}"""


def assert_fits(locator, what: str) -> None:
    expect(locator).to_be_visible()
    fit = locator.evaluate(FITS)
    assert fit["scroll"] <= fit["client"] and fit["inside"], f"{what} overflows its box: {fit}"


@pytest.fixture
def laptop(open_page, live_server, demo):
    """A logged-in page of the given width, on a workspace that also has a tiny-cost request
    tagged with a near-duplicate key (Environment vs environment)."""
    write_log_batch(
        [
            log_record(
                demo["workspace"],
                demo["api_key"],
                metadata={"_user": "zed", "Environment": "prod"},
                user="zed",
                cost="0.000012",
            )
        ]
    )

    def open_(width: int):
        page = open_page(width=width, height=800)
        login(page, live_server)
        return page

    return open_


@pytest.mark.parametrize("width", WIDTHS)
def test_overview_tiles_hold_small_costs(laptop, live_server, shot, width):
    page = laptop(width)
    cost = page.locator('[data-kpi="cost"]')
    expect(cost).to_have_text("$0.000995")  # 21 x $0.0000468 + $0.000012
    tiles = page.locator(".tiles .tile")
    expect(tiles).to_have_count(7)
    for i in range(7):
        assert_fits(tiles.nth(i).locator(".value"), f"tile {i} value")
        assert_fits(tiles.nth(i), f"tile {i}")
    # Still one row of seven figures on a laptop, not a lone tile wrapped below.
    tops = {round(box["y"]) for box in (tiles.nth(i).bounding_box() for i in range(7))}
    assert len(tops) == 1, tops
    shot(page, f"20-overview-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_near_duplicate_heading_reads_as_one_line(laptop, live_server, shot, width):
    page = laptop(width)
    page.goto(f"{live_server.url}/w/acme/metadata-keys/?range=24h")
    heading = page.get_by_role("heading", name="Near-duplicate keys")
    expect(heading).to_contain_text("environment vs Environment")
    codes = heading.locator("code")
    expect(codes).to_have_count(2)
    first, second = codes.nth(0).bounding_box(), codes.nth(1).bounding_box()
    # Running text: "vs" and a space between the two keys, not the row's width.
    assert abs(first["y"] - second["y"]) < 2 and 0 < second["x"] - (first["x"] + first["width"]) < 40, (first, second)
    assert_fits(heading, "near-duplicate heading")
    shot(page, f"21-metadata-keys-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_log_detail_keeps_tokens_cost_and_latency_in_view(laptop, live_server, demo, shot, width):
    record = demo["records"][2]
    page = laptop(width)
    page.goto(f"{live_server.url}/w/acme/logs/?range=24h")
    row = page.locator(f'#log-rows tr[data-log-id="{record["id"]}"]')
    row.get_by_role("link", name=f"Open log {record['id']}").click()
    panel = page.locator("#detail")
    expect(panel).to_contain_text(record["trace_id"])

    # The list beside the panel: the figure columns are on screen, not scrolled away.
    table = page.locator("#log-table")
    for name in ("Tokens", "Cost", "Latency"):
        expect(table.get_by_role("columnheader", name=name)).to_be_in_viewport(ratio=1)
    expect(row.locator("td.num").nth(1)).to_have_text("$0.000047")
    for i in range(3):
        expect(row.locator("td.num").nth(i)).to_be_in_viewport(ratio=1)
    assert_fits(page.locator(".table-wrap"), "log list")

    # The panel: each figure is shown whole.
    for term in ("Latency", "Tokens", "Cost"):
        value = panel.locator(f"dt:text-is('{term}') + dd")
        expect(value).to_be_in_viewport(ratio=1)
        assert_fits(value, f"detail {term}")
        assert value.evaluate(BROKEN_WORDS) == [], f"detail {term} breaks words across lines"
    expect(panel.locator("dt:text-is('Tokens') + dd")).to_have_text("120 in · 48 out · 168 total")
    assert_fits(panel, "detail panel")
    shot(page, f"22-log-detail-{width}")

    # Closing the panel brings the Metadata column back.
    panel.get_by_role("button", name="Close log detail").click()
    expect(table.get_by_role("columnheader", name="Metadata")).to_be_visible()
