"""Each page renders what it promises from the rollups, with a bounded number of queries, and
answers htmx refreshes with just its partial."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from tests.dashboard.conftest import write_logs
from workspaces import services

pytestmark = pytest.mark.django_db

# name -> (query string, most queries allowed)
PAGES = {
    "overview": ("range=24h", 16),
    "logs": ("range=24h", 12),
    "summary": ("range=24h&group=metadata.environment", 13),  # + the window total (shares, "(not set)")
    "users": ("range=24h", 8),
    "errors": ("range=24h", 16),
    "metadata_keys": ("range=24h", 12),
    "audit": ("", 6),
    "settings": ("", 6),
    "settings_keys": ("", 7),
    "settings_providers": ("", 6),
    "alerts": ("", 8),
}


def _get(client, name, workspace, query="", **headers):
    return client.get(f"{reverse(f'dashboard:{name}', args=[workspace.slug])}?{query}", headers=headers)


@pytest.mark.parametrize("name", PAGES)
def test_each_page_renders_within_its_query_budget(
    owner_client, workspace, logs, provider, name, django_assert_max_num_queries
):
    query, budget = PAGES[name]
    with django_assert_max_num_queries(budget):
        response = _get(owner_client, name, workspace, query)
    assert response.status_code == 200
    assert b'<main id="main"' in response.content


@pytest.mark.parametrize("name", ["overview", "logs", "summary", "users", "errors", "metadata_keys", "audit"])
def test_htmx_refresh_gets_only_the_partial(owner_client, workspace, logs, name):
    response = _get(owner_client, name, workspace, "range=7d", HX_Request="true", HX_Target="results")
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert "HX-Request" in response["Vary"] or name == "audit"


def test_history_restore_gets_the_whole_page(owner_client, workspace, logs):
    response = _get(
        owner_client,
        "logs",
        workspace,
        "range=7d",
        HX_Request="true",
        HX_Target="results",
        HX_History_Restore_Request="true",
    )
    assert b"<html" in response.content


def test_overview_shows_rollup_totals(owner_client, workspace, logs):
    response = _get(owner_client, "overview", workspace, "range=24h")
    current = response.context["kpis"]["current"]
    assert current["requests"] == 6
    assert current["errors"] == 1
    assert current["users"] == 4
    assert current["p95_latency"] is not None
    assert (
        response.context["series"]["requests"].count(None) + sum(v or 0 for v in response.context["series"]["requests"])
        >= 6
    )
    page = response.content.decode()
    assert 'data-kpi="requests">6<' in page
    assert 'data-kpi="error_rate">16.7%<' in page


def test_late_logs_show_up_on_the_next_page_view(owner_client, workspace, api_key):
    # Hours older than 2 h are cached as closed; a batch replayed late into them (a spool after
    # an outage) must not stay invisible until the cache expires.
    hours_ago = timezone.now() - timedelta(hours=30)
    write_logs(workspace, api_key[0], [{"created_at": hours_ago}])

    def requests(window):
        return _get(owner_client, "overview", workspace, window).context["kpis"]["current"]["requests"]

    assert (requests("range=24h"), requests("range=7d")) == (0, 1)
    write_logs(workspace, api_key[0], [{"created_at": hours_ago + timedelta(minutes=1)} for _ in range(2)])
    assert requests("range=7d") == 3
    call_command("rebuild_rollups", workspace=workspace.slug, stdout=StringIO())
    assert requests("range=7d") == 3


def test_overview_matches_the_rest_api(owner_client, workspace, api_key, logs):
    page = _get(owner_client, "overview", workspace, "range=7d")
    window = page.context["window"]
    kpis = page.context["kpis"]["current"]
    params = {"start": window.start.isoformat(), "end": window.end.isoformat()}
    headers = {"x-portkey-api-key": api_key[1]}
    requests = owner_client.get(reverse("analytics:graph", args=["requests"]), params, headers=headers).json()
    cost = owner_client.get(reverse("analytics:graph", args=["cost"]), params, headers=headers).json()
    users = owner_client.get(reverse("analytics:graph", args=["users"]), params, headers=headers).json()
    assert requests["summary"]["total"] == kpis["requests"] == 6
    assert cost["summary"]["total"] == pytest.approx(float(kpis["cost"]))
    assert users["summary"]["total"] == kpis["users"]


def test_overview_compares_with_the_previous_window(owner_client, workspace, api_key, logs):
    write_logs(workspace, api_key[0], [{"created_at": timezone.now() - timedelta(hours=30)}] * 3)
    kpis = _get(owner_client, "overview", workspace, "range=24h").context["kpis"]
    assert kpis["previous"]["requests"] == 3
    assert kpis["change"]["requests"] == pytest.approx(1.0)


def test_empty_workspace_shows_how_to_send_a_first_request(owner_client, workspace, api_key, provider):
    page = _get(owner_client, "overview", workspace).content.decode()
    assert "Send your first request" in page
    assert api_key[0].prefix in page
    assert api_key[1] not in page  # the full key is never shown again
    assert "@mock" in page
    assert "x-portkey-metadata" in page


def test_summary_groups_by_a_metadata_key(owner_client, workspace, logs):
    response = _get(owner_client, "summary", workspace, "range=24h&group=metadata.environment")
    rows = {row["value"]: row for row in response.context["rows"]}
    assert set(rows) == {"production", "staging"}
    assert rows["production"]["requests"] == 2 + 1  # the 'env' spelling is a different key
    assert rows["production"]["errors"] == 1
    assert rows["staging"]["success_rate"] == 1.0
    assert response.context["series"]["series"][0][0] in rows


@pytest.mark.parametrize("group", ["model", "provider", "api_key", "user"])
def test_summary_groups_by_a_dimension(owner_client, workspace, logs, group):
    rows = _get(owner_client, "summary", workspace, f"range=24h&group={group}").context["rows"]
    assert sum(row["requests"] for row in rows) == 6


def test_summary_sorts(owner_client, workspace, logs):
    rows = _get(owner_client, "summary", workspace, "range=24h&group=user&sort=value&dir=asc").context["rows"]
    assert [row["value"] for row in rows] == ["alice", "bob", "carol", "dave"]
    response = _get(owner_client, "summary", workspace, "range=24h&group=user&sort=avg_latency_ms&dir=desc")
    assert response.context["rows"][0]["value"] == "dave"  # 500 ms; bob averages 200 and 600
    # The head names the grouped dimension, marks the sorted column and links the reverse order.
    html = response.content.decode()
    assert re.search(r'aria-sort="descending"><a href="[^"]*sort=avg_latency_ms&amp;dir=asc', html)
    assert re.search(r'aria-sort="none"><a href="[^"]*sort=value[^"]*"[^>]*>User</a>', html)


def test_sort_names_are_the_rest_orderings_and_old_dashboard_links_still_sort(owner_client, workspace, logs):
    """One vocabulary: the dashboard's sort= takes REST's ordering names; the old spelling
    (sort=avg_latency, from bookmarked links) sorts the same column."""
    old = _get(owner_client, "summary", workspace, "range=24h&group=user&sort=avg_latency&dir=asc")
    new = _get(owner_client, "summary", workspace, "range=24h&group=user&sort=avg_latency_ms&dir=asc")
    assert [r["value"] for r in old.context["rows"]] == [r["value"] for r in new.context["rows"]]
    assert old.context["rows"][-1]["value"] == "dave"
    assert re.search(r'aria-sort="ascending"><a href="[^"]*sort=avg_latency_ms&amp;dir=desc', old.content.decode())


def test_the_share_column_sorts_by_share(owner_client, workspace, logs):
    """The Share header sorts by share (marked as the sorted column), not silently by requests."""
    response = _get(owner_client, "summary", workspace, "range=24h&group=user&sort=share&dir=asc")
    shares = [row["share"] for row in response.context["rows"]]
    assert shares == sorted(shares) and shares[0] < shares[-1]
    html = response.content.decode()
    assert re.search(r'aria-sort="ascending"><a href="[^"]*sort=share&amp;dir=desc[^"]*"[^>]*>Share</a>', html)
    assert re.search(r'aria-sort="none"><a href="[^"]*sort=requests[^"]*"[^>]*>Requests</a>', html)


def test_users_table_head_marks_the_sorted_column(owner_client, workspace, logs):
    html = _get(owner_client, "users", workspace, "range=24h&sort=requests&dir=asc").content.decode()
    assert re.search(r'aria-sort="ascending"><a href="[^"]*sort=requests&amp;dir=desc', html)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_summary_exports_the_current_view(owner_client, workspace, logs, fmt):
    response = _get(owner_client, "summary_export", workspace, f"range=24h&group=metadata.feature&format={fmt}")
    body = response.content.decode()
    assert response["Content-Disposition"].endswith(f'.{fmt}"')
    if fmt == "csv":
        lines = body.strip().splitlines()
        assert lines[0].startswith("value,requests,cost")
        assert sorted(line.split(",")[0] for line in lines[1:]) == ["chat", "search"]
    else:
        import json

        docs = [json.loads(line) for line in body.strip().splitlines()]
        assert {d["value"]: d["requests"] for d in docs} == {"chat": 4, "search": 2}
        assert docs[0]["group_by"] == "metadata.feature"


def test_users_page_lists_users_with_drill_down(owner_client, workspace, logs):
    response = _get(owner_client, "users", workspace, "range=24h")
    rows = {row["value"]: row for row in response.context["rows"]}
    assert rows["alice"]["requests"] == 2
    assert "?range=24h&amp;user=alice" in response.content.decode()


def test_errors_page_shows_failing_dimensions(owner_client, workspace, logs):
    response = _get(owner_client, "errors", workspace, "range=24h")
    assert response.context["totals"]["errors"] == 1
    assert [r["value"] for r in response.context["failing_models"]] == ["gpt-4o"]
    assert [(r["status"], r["requests"]) for r in response.context["status_codes"]] == [("200", 5), ("500", 1)]
    assert ("_user", "carol") in {(r["key"], r["value"]) for r in response.context["failing_metadata"]}
    # Each code links to exactly its logs.
    assert "?range=24h&amp;status_code=500" in response.content.decode()


def test_errors_page_lists_exact_status_codes(owner_client, workspace, api_key):
    now = timezone.now()
    codes = [200, 200, 429, 429, 429, 404, 502, 503, 503]
    write_logs(
        workspace,
        api_key[0],
        [
            {"status_code": code, "success": code < 400, "created_at": now - timedelta(minutes=i)}
            for i, code in enumerate(codes)
        ],
    )
    response = _get(owner_client, "errors", workspace, "range=24h")
    shown = [(r["status"], r["requests"]) for r in response.context["status_codes"]]
    # By class, busiest code first within a class.
    assert shown == [("200", 2), ("429", 3), ("404", 1), ("503", 2), ("502", 1)]
    page = response.content.decode()
    assert 'data-status="429"' in page and "status_code=429" in page
    logs_page = _get(owner_client, "logs", workspace, "range=24h&status_code=503")
    assert {row["status_code"] for row in logs_page.context["rows"]} == {503}


def test_metadata_keys_page_warns_about_near_duplicates(owner_client, workspace, api_key, logs):
    workspace.metadata_schema = {"type": "object", "properties": {"environment": {"type": "string"}}}
    workspace.save()
    response = _get(owner_client, "metadata_keys", workspace, "range=24h")
    report = response.context["report"]
    keys = {row["key"]: row for row in report["keys"]}
    assert keys["environment"]["requests"] == 5
    assert keys["environment"]["declared"] is True
    assert keys["env"]["share"] == pytest.approx(1 / 6)
    assert keys["env"]["duplicate_of"] == ["environment"]
    [warning] = report["warnings"]
    variants = {v["key"]: v for v in warning["keys"]}
    assert set(variants) == {"env", "environment"}
    assert variants["env"]["api_keys"] == [f"default ({api_key[0].prefix}…)"]
    assert "Near-duplicate keys" in response.content.decode()


def test_metadata_keys_page_names_the_keys_sending_each_variant_in_the_window(owner_client, workspace, api_key, logs):
    # A second key sent "env" three days ago and a keyless custom log sent it just now: in
    # the 24 h window only the default key and the keyless log are named; over 7 days all three.
    old_key, _ = services.api_key_create(workspace=workspace, name="legacy")
    now = timezone.now()
    write_logs(workspace, old_key, [{"created_at": now - timedelta(days=3), "metadata": {"env": "staging"}}])
    write_logs(workspace, None, [{"created_at": now - timedelta(minutes=1), "metadata": {"env": "dev"}}])

    def senders(query):
        report = _get(owner_client, "metadata_keys", workspace, query).context["report"]
        [warning] = report["warnings"]
        return {v["key"]: v["api_keys"] for v in warning["keys"]}

    default = f"default ({api_key[0].prefix}…)"
    assert senders("range=24h")["env"] == ["(no key)", default]
    assert senders("range=7d")["env"] == ["(no key)", default, f"legacy ({old_key.prefix}…)"]


def test_metadata_keys_page_flags_case_and_separator_variants():
    from analytics.dashboard_selectors import normalised_key

    assert normalised_key("User") == normalised_key("user") == normalised_key("_user")
    assert normalised_key("feature-name") == normalised_key("feature_name")
    assert normalised_key("env") == normalised_key("environment")
    assert normalised_key("team") != normalised_key("environment")


def test_an_invalid_window_says_so_and_falls_back(owner_client, workspace, logs):
    response = _get(owner_client, "overview", workspace, "start=yesterday")
    assert response.status_code == 400
    assert "ISO 8601" in response.content.decode()
    assert response.context["window"].preset == "24h"


@pytest.mark.parametrize("debug", [True, False])
def test_login_page_names_the_demo_account_only_in_debug(client, settings, debug):
    # The demo's admin/admin exists only under `make run` (DEBUG); production must not
    # advertise a password.
    settings.DEBUG = debug
    page = client.get(reverse("dashboard:login")).content.decode()
    assert 'name="password"' in page
    assert ("<code>admin</code> / <code>admin</code>" in page) is debug


TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# An on...= attribute inside a tag (not text like "Pick one"), and a <script> with no src.
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_has_inline_script_or_handlers(path):
    # Our CSP (script-src 'self') blocks both: the code silently never runs in a browser.
    text = path.read_text()
    assert not INLINE_HANDLER.search(text)
    assert not INLINE_SCRIPT.search(text)


@pytest.mark.parametrize("name", PAGES)
def test_rendered_pages_carry_no_inline_code(owner_client, workspace, logs, provider, name):
    html = _get(owner_client, name, workspace, PAGES[name][0]).content.decode()
    assert not INLINE_HANDLER.search(html)
    # json_script's data blocks are not executed, so CSP does not apply to them.
    scripts = INLINE_SCRIPT.findall(html)
    assert all('type="application/json"' in tag for tag in scripts), scripts
