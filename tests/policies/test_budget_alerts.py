"""Budget thresholds are alert rules: the "budget" metric measures the percent of a policy's
limit used in the policy's current window, per scope value of the policy."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from analytics.alerts import evaluation
from analytics.alerts.models import AlertEvent
from analytics.policies import services as policy_services
from tests.alerts.conftest import make_rule, write_logs

pytestmark = pytest.mark.django_db


def test_rules_at_50_80_100_percent_fire_per_user(workspace):
    policy = policy_services.policy_create(
        workspace=workspace, name="user month", per="_user", kind="cost", limit=1, window="month"
    )
    write_logs(
        workspace,
        {"user": "alice", "metadata": {"_user": "alice"}, "cost": "0.60"},
        {"user": "bob", "metadata": {"_user": "bob"}, "cost": "0.90"},
        {"user": "carol", "metadata": {"_user": "carol"}, "cost": "0.10"},
    )
    fired = {}
    for percent in (50, 80, 100):
        rule, _ = make_rule(
            workspace,
            name=f"budget {percent}%",
            metric="budget",
            metric_options={"policy": policy.pk},
            comparison="gte",
            threshold=str(percent),
        )
        evaluation.evaluate_rule(rule.pk, now=timezone.now())
        fired[percent] = sorted(
            AlertEvent.objects.filter(rule=rule, kind="fired").values_list("scope_value", flat=True)
        )
    assert fired == {50: ["alice", "bob"], 80: ["bob"], 100: []}
    event = AlertEvent.objects.filter(rule__name="budget 80%").get()
    assert round(event.value, 6) == 90.0 and event.payload["scope_value"] == "bob"


def test_a_budget_rule_names_a_policy_of_its_workspace(workspace, other_workspace):
    theirs = policy_services.policy_create(workspace=other_workspace, name="theirs", kind="cost", limit=1)
    for options in ({}, {"policy": "1"}, {"policy": theirs.pk}):
        with pytest.raises(ValidationError) as refused:
            make_rule(workspace, name="budget", metric="budget", metric_options=options, threshold="80")
        assert "metric_options" in refused.value.message_dict
