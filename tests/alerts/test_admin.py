"""The admin edits alert rules through the services (audited, secret generated and encrypted)
and shows their history read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule
from tests.alerts.conftest import make_rule
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_adding_a_rule_in_the_admin_is_audited_and_gets_a_secret(admin_client, workspace):
    response = admin_client.post(
        reverse("admin:analytics_alertrule_add"),
        {
            "workspace": workspace.pk,
            "name": "Errors",
            "enabled": "on",
            "scope": "metadata.environment=production",
            "per": "",
            "per_limit": "100",
            "metric": "error_rate",
            "window": "15m",
            "comparison": "gte",
            "threshold": "5",
            "min_requests": "20",
            "cooldown_minutes": "60",
            "webhook_urls": "https://hooks.example.com/a\nhttps://hooks.example.com/b",
            "emails": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    rule = AlertRule.objects.get()
    assert rule.webhook_urls == ["https://hooks.example.com/a", "https://hooks.example.com/b"]
    secret = rule.get_webhook_secret()
    assert secret.startswith("whsec_") and secret in response.content.decode()  # shown once, as a message
    event = AuditEvent.objects.get(object_type="alert_rule")
    assert (event.action, event.via) == ("alert_rule.create", "admin")


def test_admin_validation_names_the_field(admin_client, workspace):
    rule, _ = make_rule(workspace)
    url = reverse("admin:analytics_alertrule_change", args=[rule.pk])
    response = admin_client.post(
        url,
        {
            "workspace": workspace.pk,
            "name": "Chat spend",
            "scope": "colour=blue",
            "per_limit": "100",
            "metric": "spend",
            "window": "1h",
            "comparison": "gt",
            "threshold": "1",
            "min_requests": "1",
            "cooldown_minutes": "60",
        },
    )
    assert response.status_code == 200
    assert "colour: Unknown parameter" in str(response.context["adminform"].form.errors["scope"])


def test_history_is_read_only(admin_client, workspace):
    assert admin_client.get(reverse("admin:analytics_alertevent_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:analytics_alertdelivery_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:analytics_alertevent_add")).status_code == 403
    assert not AlertEvent.objects.exists() and not AlertDelivery.objects.exists()
