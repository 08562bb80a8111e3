"""seed_demo writes realistic logs through the log writer, so the rollups agree with the logs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from analytics.models import DimensionRollup, MetadataKey, RequestLog
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db


def test_it_seeds_logs_with_rollups_and_near_duplicate_keys(capsys):
    call_command("seed_demo", "--logs", "600", "--workspace", "seeded", "--days", "3", "--batch", "250")
    workspace = Workspace.objects.get(slug="seeded")
    assert RequestLog.objects.filter(workspace=workspace).count() == 600
    assert DimensionRollup.objects.filter(workspace=workspace).aggregate(n=Sum("requests"))["n"] == 600
    keys = set(MetadataKey.objects.filter(workspace=workspace).values_list("key", flat=True))
    assert {"_user", "environment", "env", "feature", "feature-name", "team"} <= keys
    assert RequestLog.objects.filter(workspace=workspace, success=False).exists()
    assert capsys.readouterr().out.strip() == "600"


def test_it_adds_to_an_existing_workspace(workspace):
    call_command("seed_demo", "--logs", "50", "--workspace", workspace.slug, "--days", "1")
    call_command("seed_demo", "--logs", "50", "--workspace", workspace.slug, "--days", "1", "--seed", "8")
    assert RequestLog.objects.filter(workspace=workspace).count() == 100


def test_seeded_costs_carry_their_price_version_and_recompute_changes_nothing(capsys):
    call_command("seed_demo", "--logs", "200", "--workspace", "seeded", "--days", "2")
    logs = RequestLog.objects.filter(workspace__slug="seeded")
    assert not logs.filter(cost__isnull=False, price_version="").exists()
    assert logs.filter(price_version__startswith="genai-prices ").exists()
    since = (timezone.now() - timedelta(days=3)).isoformat()
    call_command("recompute_cost", "--workspace", "seeded", "--since", since)
    assert "200 log(s) again: 0 changed" in capsys.readouterr().out
