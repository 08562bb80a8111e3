"""manage.py recompute_cost: old logs and their rollups priced again, audited; unpriced logs
counted, never as 0; the new token ranges filter like the others."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from analytics import pricing
from analytics.models import DimensionRollup, MetadataRollup, RequestLog
from tests.dashboard.conftest import write_logs
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_recompute_cost_reprices_old_logs_and_rollups_and_audits_it(workspace, api_key):
    earlier = timezone.now() - timedelta(hours=5)
    write_logs(
        workspace,
        api_key[0],
        [
            {
                "model": "gpt-4o",
                "prompt_tokens": 1_000_000,
                "completion_tokens": 0,
                "total_tokens": 1_000_000,
                "cost": "2.5",
                "price_version": "genai-prices 0.2.3",
                "created_at": earlier,
            },
            {
                "model": "gpt-4o",
                "prompt_tokens": 1_000_000,
                "completion_tokens": 0,
                "total_tokens": 1_000_000,
                "cost": "2.5",
                "created_at": earlier - timedelta(days=3),
            },  # before --since: left alone
        ],
    )
    assert DimensionRollup.objects.get(bucket__gte=earlier - timedelta(hours=1)).cost == Decimal("2.5")
    override = pricing.price_create(
        model="gpt-4o", workspace=workspace, input_per_million=Decimal(2), output_per_million=Decimal(8)
    )

    out = StringIO()
    since = (earlier - timedelta(hours=1)).isoformat()
    call_command("recompute_cost", "--workspace", workspace.slug, "--since", since, stdout=out)

    recent, old = RequestLog.objects.order_by("-created_at")
    assert recent.cost == Decimal(2) and recent.price_version == pricing.override_version(override)
    assert (old.cost, old.price_version) == (Decimal("2.5"), "")
    assert DimensionRollup.objects.get(bucket__gte=earlier - timedelta(hours=1)).cost == Decimal(2)
    assert MetadataRollup.objects.get(key="environment", bucket__gte=earlier - timedelta(hours=1)).cost == Decimal(2)
    event = AuditEvent.objects.get(action="workspace.recompute_cost")
    assert (event.workspace, event.via, event.before["cost"], event.after["cost"]) == (workspace, "command", "2.5", "2")
    assert (event.after["logs"], event.after["changed"]) == (1, 1)
    assert "1 changed" in out.getvalue()


def test_recompute_cost_names_a_bad_time(workspace):
    with pytest.raises(CommandError, match="--since: enter an ISO 8601 date-time"):
        call_command("recompute_cost", "--workspace", workspace.slug, "--since", "yesterday")
    with pytest.raises(CommandError, match="--until must be after --since"):
        call_command("recompute_cost", "--workspace", workspace.slug, "--since", "2026-01-02", "--until", "2026-01-01")


def test_unpriced_requests_are_counted_not_costed_as_zero(workspace, api_key, client, owner):
    client.force_login(owner)
    write_logs(
        workspace,
        api_key[0],
        [
            {"model": "my-finetune", "cost": None},
            {"model": "my-finetune", "cost": None, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            {"cost": "0.001"},
        ],
    )
    row = DimensionRollup.objects.get(model="my-finetune")
    assert (row.requests, row.priced_requests, row.unpriced_requests, row.cost) == (2, 0, 1, 0)
    overview = client.get(f"/w/{workspace.slug}/").content.decode()
    assert "1 request with no price" in overview
    summary = client.get(f"/w/{workspace.slug}/summary/?group=model").content.decode()
    assert "1 request with no price" in summary


def test_token_parts_roll_up_and_filter(workspace, api_key, client, member):
    write_logs(
        workspace,
        api_key[0],
        [
            {"cached_prompt_tokens": 100, "reasoning_tokens": 30, "trace_id": "cached"},
            {"cached_prompt_tokens": 0, "reasoning_tokens": 0, "trace_id": "plain"},
        ],
    )
    row = DimensionRollup.objects.get()
    assert (row.cached_prompt_tokens, row.reasoning_tokens) == (100, 30)
    client.force_login(member)
    url = f"/api/v1/logs?workspace={workspace.slug}"
    found = client.get(url + "&cached_tokens_min=1").json()["data"]
    assert [log["trace_id"] for log in found] == ["cached"]
    assert (found[0]["cached_prompt_tokens"], found[0]["reasoning_tokens"]) == (100, 30)
    assert [log["trace_id"] for log in client.get(url + "&reasoning_tokens_max=0").json()["data"]] == ["plain"]
    bad = client.get(url + "&cached_tokens_min=lots")
    assert bad.status_code == 400 and "cached_tokens_min" in bad.content.decode()


def test_recompute_cost_keeps_a_cache_hit_at_0_and_reprices_its_saving(workspace, api_key):
    earlier = timezone.now() - timedelta(hours=1)
    usage = {"model": "gpt-4o", "prompt_tokens": 1_000_000, "completion_tokens": 0, "total_tokens": 1_000_000}
    write_logs(
        workspace,
        api_key[0],
        [{**usage, "created_at": earlier, "cache_status": "HIT", "cost": "0", "cache_saved_cost": "2.5"}],
    )
    pricing.price_create(
        model="gpt-4o", workspace=workspace, input_per_million=Decimal(2), output_per_million=Decimal(8)
    )

    call_command("recompute_cost", "--workspace", workspace.slug, "--since", (earlier - timedelta(hours=1)).isoformat())

    log = RequestLog.objects.get()
    assert (log.cost, log.cache_saved_cost) == (0, Decimal(2))
    assert DimensionRollup.objects.get().cost == 0
    event = AuditEvent.objects.get(action="workspace.recompute_cost")
    assert (event.before["cost"], event.after["cost"], event.after["changed"]) == ("0", "0", 1)
