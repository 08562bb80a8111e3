"""Alert rule validation: every problem is reported under the field to fix, with the part of
it that is wrong (the filter parameter, the URL, the address)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from analytics.alerts import rules, services
from analytics.alerts.models import AlertRule
from tests.alerts.conftest import make_rule
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def errors_of(workspace, **fields) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        make_rule(workspace, **fields)
    return caught.value.message_dict


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"scope": "metadata.feature__in="}, None, None),  # an empty list is no condition: valid
        ({"scope": "status_code=700"}, "scope", "status_code"),
        ({"scope": "start=2026-01-01"}, "scope", "the rule's window sets the time"),
        ({"scope": "colour=blue"}, "scope", "colour: Unknown parameter"),
        ({"scope": "=chat"}, "scope", "param=value"),
        ({"scope": "metadata.=x"}, "scope", "metadata."),
        ({"per": "colour"}, "per", "_user, metadata.<key>"),
        ({"window": "5w"}, "window", "'5w'"),
        ({"window": "91d"}, "window", "90 days"),
        ({"metric": "vibes"}, "metric", "spend, tokens, requests, error_rate, p95_latency"),
        ({"metric": "error_rate", "threshold": "150"}, "threshold", "at most 100"),
        ({"threshold": "-1"}, "threshold", "at least 0"),
        ({"webhook_urls": ["ftp://example.com/x"]}, "webhook_urls", "ftp://example.com/x"),
        ({"webhook_urls": ["https://user:pw@example.com/x"]}, "webhook_urls", "user name or password"),
        ({"webhook_urls": ["http://169.254.169.254/latest"]}, "webhook_urls", "UPSTREAM_ALLOWED_NETWORKS"),
        ({"emails": ["ops@example.com", "not-an-address"]}, "emails", "not-an-address"),
        ({"cooldown_minutes": 100_000}, "cooldown_minutes", None),
        ({"per_limit": 0}, "per_limit", None),
        ({"metric_options": {"policy": 3}}, "metric_options", "takes no options"),
    ],
)
def test_each_problem_names_its_field(workspace, fields, field, fragment):
    if field is None:
        rule, _ = make_rule(workspace, **fields)
        assert rule.pk
        return
    errors = errors_of(workspace, **fields)
    assert field in errors, errors
    if fragment:
        assert any(fragment in message for message in errors[field]), errors[field]


def test_several_problems_are_reported_together(workspace):
    errors = errors_of(workspace, scope="colour=blue", window="soon", emails=["x"])
    assert {"scope", "window", "emails"} <= set(errors)


def test_a_name_is_unique_per_workspace_and_named(workspace, other_workspace):
    make_rule(workspace, name="Spend")
    assert "already has a rule" in errors_of(workspace, name="Spend")["name"][0]
    assert make_rule(other_workspace, name="Spend")[0].pk  # another workspace may use it


def test_the_canonical_forms_are_stored(workspace):
    rule, _ = make_rule(
        workspace,
        scope="metadata.feature=chat\n model = gpt-4o & metadata.environment__in=prod,staging",
        per="user",
        webhook_urls=[" https://hooks.example.com/a ", "https://hooks.example.com/a"],
        emails=["ops@example.com "],
    )
    rule.refresh_from_db()
    assert rule.scope == "metadata.feature=chat&model=gpt-4o&metadata.environment__in=prod,staging"
    assert rule.per == "_user"
    assert rule.webhook_urls == ["https://hooks.example.com/a"]
    assert rule.emails == ["ops@example.com"]


def test_the_secret_is_encrypted_and_never_audited(workspace):
    rule, secret = make_rule(workspace, webhook_urls=["https://hooks.example.com/a"])
    assert secret.startswith("whsec_") and secret not in rule.encrypted_webhook_secret
    assert rule.get_webhook_secret() == secret
    services.alert_rule_update(rule=rule, webhook_secret="another-secret-of-enough-length", threshold="2")
    events = AuditEvent.objects.filter(object_type="alert_rule").order_by("id")
    assert [e.action for e in events] == ["alert_rule.create", "alert_rule.update"]
    assert events[1].after["webhook_secret"] == "changed" and events[1].after["threshold"] == "2"
    for event in events:
        assert secret not in str(event.before) + str(event.after)
        assert "another-secret" not in str(event.before) + str(event.after)


def test_deleting_is_audited(workspace):
    rule, _ = make_rule(workspace)
    services.alert_rule_delete(rule=rule, via="command")
    assert not AlertRule.objects.exists()
    event = AuditEvent.objects.get(action="alert_rule.delete")
    assert (event.via, event.before["name"], event.workspace) == ("command", "Chat spend", workspace)


def test_windows():
    now = datetime(2026, 3, 17, 14, 25, 30, tzinfo=UTC)
    assert rules.parse_window("5m").bounds(now) == (now - timedelta(minutes=5), now)
    assert rules.parse_window("24h").bounds(now) == (now - timedelta(hours=24), now)
    assert rules.parse_window("today").bounds(now) == (datetime(2026, 3, 17, tzinfo=UTC), now)
    assert rules.parse_window("month").bounds(now) == (datetime(2026, 3, 1, tzinfo=UTC), now)
    assert rules.parse_window("1h").label == "the last hour"
    assert rules.parse_window("7d").label == "the last 7 days"
