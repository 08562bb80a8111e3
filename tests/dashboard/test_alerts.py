"""The Alerts page: every member reads it, owners and admins change and test rules through the
audited services, outsiders get 404, bad input is a 400 naming the field or parameter."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from analytics.alerts import evaluation, services
from analytics.alerts.models import AlertEvent, AlertRule
from tests.alerts.conftest import make_rule, write_logs
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

FORM = {
    "name": "Chat spend",
    "metric": "spend",
    "comparison": "gt",
    "threshold": "2.5",
    "window": "1h",
    "scope": "metadata.feature=chat\nmodel=gpt-4o",
    "per": "_user",
    "per_limit": "20",
    "min_requests": "1",
    "cooldown_minutes": "30",
    "webhook_urls": "https://hooks.example.com/portico",
    "emails": "ops@example.com, oncall@example.com",
    "enabled": "on",
}


def url(name: str, *args) -> str:
    return reverse(f"dashboard:{name}", args=["acme", *args])


def test_an_owner_creates_a_rule_and_sees_its_secret_once(owner_client):
    response = owner_client.post(url("alerts"), {**FORM, "form_nonce": "n1"})
    assert response.status_code == 200
    rule = AlertRule.objects.get()
    assert (rule.scope, rule.per, rule.per_limit, str(rule.threshold)) == (
        "metadata.feature=chat&model=gpt-4o",
        "_user",
        20,
        "2.500000",
    )
    assert rule.emails == ["ops@example.com", "oncall@example.com"]
    page = response.content.decode()
    assert rule.get_webhook_secret() in page and 'id="new-secret"' in page
    again = owner_client.post(url("alerts"), {**FORM, "form_nonce": "n1"})  # a reload
    assert "already submitted" in again.content.decode() and AlertRule.objects.count() == 1
    later = owner_client.get(url("alerts")).content.decode()
    assert rule.get_webhook_secret() not in later and "Chat spend" in later
    assert AuditEvent.objects.get(object_type="alert_rule").via == "dashboard"


def test_validation_errors_are_shown_on_their_field(owner_client):
    bad = {**FORM, "scope": "colour=blue", "threshold": "٣", "window": "soon"}
    response = owner_client.post(url("alerts"), bad)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "threshold" in errors
    response = owner_client.post(url("alerts"), {**FORM, "scope": "colour=blue", "window": "soon"})
    errors = response.context["form"].errors
    assert response.status_code == 400 and "colour" in errors["scope"][0] and "'soon'" in errors["window"][0]
    assert not AlertRule.objects.exists()


def test_the_page_lists_state_history_and_deliveries(owner_client, workspace):
    rule, _ = make_rule(workspace, webhook_urls=["http://127.0.0.1:9/closed"], window="5m")
    write_logs(workspace, {"created_at": timezone.now(), "cost": "3"})
    evaluation.evaluate_all()
    from analytics.alerts import delivery

    delivery.send_due()
    page = owner_client.get(url("alerts")).content.decode()
    assert '<span class="pill bad">firing</span>' in page
    assert 'data-event="' in page and ">fired<" in page
    assert "http://127.0.0.1:9/closed" in page and "Not delivered" in page and ">pending<" in page
    assert owner_client.get(url("alerts"), {"rule": rule.pk}).status_code == 200
    refused = owner_client.get(url("alerts"), {"rule": "x1"})
    assert refused.status_code == 400 and "rule" in refused.content.decode()


def test_edit_and_delete_go_through_the_services(owner_client, workspace):
    rule, _ = make_rule(workspace)
    form = owner_client.get(url("alert_rule_edit", rule.pk))
    assert form.status_code == 200 and form.context["form"].initial["threshold"] == "1"
    response = owner_client.post(url("alert_rule_edit", rule.pk), {**FORM, "name": "Renamed", "enabled": ""})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.enabled) == ("Renamed", False)
    assert owner_client.get(url("alert_rule_delete", rule.pk)).status_code == 200
    assert owner_client.post(url("alert_rule_delete", rule.pk)).status_code == 302
    assert not AlertRule.objects.exists()
    actions = AuditEvent.objects.filter(object_type="alert_rule").values_list("action", flat=True)
    assert sorted(actions) == ["alert_rule.create", "alert_rule.delete", "alert_rule.update"]


def test_test_send_shows_each_result(owner_client, workspace):
    rule, _ = make_rule(workspace, webhook_urls=["http://127.0.0.1:9/closed"], emails=["ops@example.com"])
    response = owner_client.post(url("alert_rule_test", rule.pk))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Webhook http://127.0.0.1:9/closed:" in page and "failed: Not delivered" in page
    assert "E-mail to ops@example.com:" in page and "sent in" in page
    assert AlertEvent.objects.get().kind == "test"
    quiet, _ = make_rule(workspace, name="quiet")
    assert "Add a webhook URL" in owner_client.post(url("alert_rule_test", quiet.pk)).content.decode()


def test_rotating_the_secret_shows_the_new_one_once(owner_client, workspace):
    rule, old = make_rule(workspace)
    page = owner_client.post(url("alert_rule_rotate_secret", rule.pk)).content.decode()
    rule.refresh_from_db()
    assert rule.get_webhook_secret() != old and rule.get_webhook_secret() in page


def test_members_read_but_cannot_change(client, member, workspace):
    rule, _ = make_rule(workspace)
    client.force_login(member)
    page = client.get(url("alerts"))
    assert page.status_code == 200 and "only workspace owners and admins" in page.content.decode()
    assert 'id="alert-rule-form"' not in page.content.decode()
    assert client.post(url("alerts"), FORM).status_code == 403
    assert client.post(url("alert_rule_edit", rule.pk), FORM).status_code == 403
    assert client.post(url("alert_rule_test", rule.pk)).status_code == 403
    assert client.post(url("alert_rule_delete", rule.pk)).status_code == 403
    assert client.post(url("alert_rule_rotate_secret", rule.pk)).status_code == 403
    assert AlertRule.objects.get().name == rule.name


def test_outsiders_get_404(client, outsider, workspace, other_workspace):
    rule, _ = make_rule(workspace)
    client.force_login(outsider)
    assert client.get(url("alerts")).status_code == 404
    assert client.get(url("alert_rule_edit", rule.pk)).status_code == 404
    # Their own workspace does not reach another's rule either.
    assert client.get(reverse("dashboard:alert_rule_edit", args=["other", rule.pk])).status_code == 404
    assert client.post(reverse("dashboard:alert_rule_test", args=["other", rule.pk])).status_code == 404
    assert client.post(reverse("dashboard:alert_rule_delete", args=["other", rule.pk])).status_code == 404
    services.alert_rule_update(rule=rule, threshold="3")  # still there
