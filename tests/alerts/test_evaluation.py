"""Evaluation end to end with a real webhook receiver on loopback: a rule fires once, stays
quiet while firing, resolves, respects its cooldown; the receiver verifies the signature."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from analytics.alerts import delivery, evaluation, metrics
from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule, AlertState
from tests.alerts.conftest import make_rule, write_logs

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(second=0, microsecond=0)


def tick(minutes: float = 0) -> None:
    """One scheduler round at NOW + minutes: evaluate, then send what is due."""
    at = NOW + timedelta(minutes=minutes)
    evaluation.evaluate_all(now=at)
    delivery.send_due(now=at)


def spend(workspace, minutes: float, cost: str, **overrides) -> None:
    write_logs(workspace, {"created_at": NOW + timedelta(minutes=minutes), "cost": cost, **overrides})


@pytest.fixture
def rule(workspace, receiver):
    rule, secret = make_rule(
        workspace,
        name="Chat spend",
        scope="metadata.feature=chat",
        window="5m",
        threshold="1",
        cooldown_minutes=30,
        webhook_urls=[receiver.url],
        emails=["ops@example.com"],
    )
    rule.secret = secret
    return rule


def test_a_breach_delivers_a_signed_payload_and_an_email(workspace, rule, receiver, settings):
    settings.PORTICO_BASE_URL = "https://portico.example.com"
    spend(workspace, -1, "0.75", metadata={"feature": "chat"})
    spend(workspace, -2, "0.5", metadata={"feature": "chat"})
    spend(workspace, -2, "9", metadata={"feature": "search"})  # out of scope
    tick()
    [received] = receiver.requests
    assert received.signature_valid(rule.secret)
    assert not received.signature_valid("whsec_someone-else")
    event = AlertEvent.objects.get()
    body = received.json
    assert received.headers["idempotency-key"] == str(event.uid) == body["id"]
    assert received.headers["x-portico-event"] == "alert.fired"
    assert received.headers["content-type"] == "application/json"
    assert body["type"] == "alert.fired" and body["state"] == "firing"
    assert body["rule"] == {"id": rule.pk, "name": "Chat spend"}
    assert (body["scope"], body["per"], body["scope_value"]) == ("metadata.feature=chat", None, None)
    assert (body["metric"], body["unit"], body["value"], body["comparison"], body["threshold"]) == (
        "spend",
        "USD",
        1.25,
        ">",
        1.0,
    )
    assert body["window"]["code"] == "5m" and body["window"]["label"] == "the last 5 minutes"
    assert body["window"]["end"] == NOW.isoformat()
    assert body["dashboard_url"] == f"https://portico.example.com/w/acme/alerts/?rule={rule.pk}"
    [email] = mail.outbox
    assert email.to == ["ops@example.com"]
    assert email.subject == "[Portico] FIRING: Chat spend: spend 1.25 USD > 1"
    assert "https://portico.example.com/w/acme/alerts/" in email.body
    assert set(AlertDelivery.objects.values_list("channel", "status", "attempt")) == {
        ("webhook", "delivered", 1),
        ("email", "delivered", 1),
    }
    webhook = AlertDelivery.objects.get(channel="webhook")
    assert webhook.status_code == 200 and webhook.duration_ms > 0


def test_no_repeat_while_firing_then_a_resolved_notification(workspace, rule, receiver):
    spend(workspace, -1, "2", metadata={"feature": "chat"})
    tick()
    tick(1)
    tick(2)
    assert [r.json["type"] for r in receiver.requests] == ["alert.fired"]
    assert AlertState.objects.get().value == 2.0
    tick(10)  # the request has left the 5-minute window
    assert [r.json["type"] for r in receiver.requests] == ["alert.fired", "alert.resolved"]
    resolved = receiver.requests[1].json
    assert (resolved["state"], resolved["value"]) == ("resolved", 0.0)
    assert resolved["id"] != receiver.requests[0].json["id"]
    assert [e.kind for e in AlertEvent.objects.order_by("id")] == ["fired", "resolved"]
    assert len(mail.outbox) == 2


def test_the_cooldown_holds_back_a_refiring(workspace, rule, receiver):
    spend(workspace, -1, "2", metadata={"feature": "chat"})
    tick()
    tick(10)  # resolved
    spend(workspace, 19, "2", metadata={"feature": "chat"})
    tick(20)  # fires again 20 minutes after the first notification: inside the 30-minute cooldown
    tick(30)  # and resolves: neither is sent
    assert [r.json["type"] for r in receiver.requests] == ["alert.fired", "alert.resolved"]
    events = list(AlertEvent.objects.order_by("id").values_list("kind", "notified"))
    assert events == [("fired", True), ("resolved", True), ("fired", False), ("resolved", False)]
    spend(workspace, 44, "2", metadata={"feature": "chat"})
    tick(45)  # 45 minutes after the last notification
    assert [r.json["type"] for r in receiver.requests] == ["alert.fired", "alert.resolved", "alert.fired"]


def test_per_value_rules_fire_per_value_within_the_cap(workspace, receiver):
    make_rule(workspace, per="_user", per_limit=2, window="5m", threshold="1", webhook_urls=[receiver.url])
    for user, cost in (("alice", "5"), ("bob", "3"), ("carol", "2"), ("dave", "0.5")):
        spend(workspace, -1, cost, user=user, metadata={"_user": user})
    tick()
    fired = sorted((r.json["scope_value"], r.json["value"]) for r in receiver.requests)
    assert fired == [("alice", 5.0), ("bob", 3.0)]  # carol breaches too, but the cap checks the top 2
    assert all(r.json["per"] == "_user" for r in receiver.requests)
    # Alice stops; bob and carol keep spending: alice resolves (still checked: she was firing).
    spend(workspace, 4, "3", user="bob", metadata={"_user": "bob"})
    spend(workspace, 4, "9", user="carol", metadata={"_user": "carol"})
    receiver.reset()
    tick(5)
    assert sorted((r.json["type"], r.json["scope_value"]) for r in receiver.requests) == [
        ("alert.fired", "carol"),
        ("alert.resolved", "alice"),
    ]
    assert sorted(AlertState.objects.filter(firing=True).values_list("scope_value", flat=True)) == ["bob", "carol"]


def test_a_less_than_rule_fires_on_silence(workspace, receiver):
    make_rule(workspace, metric="requests", comparison="lt", threshold="1", window="5m", webhook_urls=[receiver.url])
    tick()
    assert [(r.json["type"], r.json["value"]) for r in receiver.requests] == [("alert.fired", 0.0)]


class CountingKind(metrics.MetricKind):
    """A kind registered by a test, as budgets will be: values from anywhere, per scope value."""

    name, label, unit = "test_budget", "Test budget", "%"
    percent = True

    def measure(self, query):
        return {"": 85.0} if query.rule.scope == "" else {}


@pytest.fixture
def counting_kind():
    kind = metrics.register(CountingKind())
    yield kind
    del metrics.REGISTRY[kind.name]


def test_a_metric_kind_plugs_into_the_registry(workspace, receiver, counting_kind):
    make_rule(workspace, metric="test_budget", threshold="80", webhook_urls=[receiver.url])
    tick()
    [received] = receiver.requests
    assert (received.json["metric"], received.json["unit"], received.json["value"]) == ("test_budget", "%", 85.0)


def test_a_failing_rule_is_reported_and_the_others_still_run(workspace, receiver, counting_kind, monkeypatch):
    broken, _ = make_rule(workspace, name="broken", metric="test_budget", threshold="10", webhook_urls=[receiver.url])
    working, _ = make_rule(workspace, name="working", metric="requests", comparison="lt", threshold="1")

    def fail(query):
        raise RuntimeError("policy store unavailable")

    monkeypatch.setattr(counting_kind, "measure", fail)
    outcome = evaluation.evaluate_all(now=NOW)
    assert (outcome.rules, outcome.failed, outcome.fired) == (1, 1, 1)
    broken.refresh_from_db()
    assert broken.check_error == "RuntimeError: policy store unavailable"
    assert AlertEvent.objects.get().rule_id == working.pk


def test_disabled_rules_are_not_evaluated_and_forget_their_state(workspace, rule, receiver):
    from analytics.alerts import services

    spend(workspace, -1, "2", metadata={"feature": "chat"})
    tick()
    services.alert_rule_update(rule=AlertRule.objects.get(), enabled=False)
    assert not AlertState.objects.exists()
    tick(10)
    assert [r.json["type"] for r in receiver.requests] == ["alert.fired"]
