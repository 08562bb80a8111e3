"""Delivery retries against a real receiver: down then up (delivered once, same idempotency
key), retryable and final answers, the attempt limit, the SSRF guard, e-mail over a dead SMTP
server, and a sender that died mid-attempt."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from analytics.alerts import delivery, evaluation
from analytics.alerts.models import AlertDelivery, AlertEvent
from tests.alerts.conftest import make_rule

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(second=0, microsecond=0)
LATER = NOW + timedelta(days=1)  # past any backoff


def fire(rule) -> AlertEvent:
    """A fired event of ``rule`` with its first attempts sent."""
    event = evaluation.create_event(rule, AlertEvent.Kind.FIRED, "", 2.0, (NOW - timedelta(hours=1), NOW), NOW)
    delivery.send_due(now=NOW)
    return event


def attempts(channel: str = "webhook") -> list[tuple]:
    rows = AlertDelivery.objects.filter(channel=channel).order_by("attempt")
    return list(rows.values_list("attempt", "status", "status_code", "final"))


@pytest.fixture
def rule(workspace, receiver, upstream_client):  # webhooks go through both upstream clients
    return make_rule(workspace, webhook_urls=[receiver.url])[0]


def test_receiver_down_then_up_gets_the_alert_exactly_once(rule, receiver, settings):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 30
    receiver.stop()  # the port is closed: connection refused
    event = fire(rule)
    [failed, pending] = AlertDelivery.objects.order_by("attempt")
    assert (failed.status, failed.status_code, failed.final) == ("failed", None, False)
    assert "Not delivered" in failed.error and failed.duration_ms is not None
    assert pending.status == "pending" and 27 <= (pending.due_at - NOW).total_seconds() <= 33
    assert delivery.send_due(now=NOW + timedelta(seconds=10)) == 0  # not due yet
    receiver.start()  # same port
    assert delivery.send_due(now=NOW + timedelta(seconds=40)) == 1
    assert delivery.send_due(now=LATER) == 0
    [received] = receiver.requests
    assert received.headers["idempotency-key"] == str(event.uid)
    assert received.headers["x-portico-delivery-attempt"] == "2"
    assert attempts() == [(1, "failed", None, False), (2, "delivered", 200, False)]


def test_a_retry_sends_the_same_event_with_the_same_key(rule, receiver):
    receiver.statuses.extend([503, 429])
    event = fire(rule)
    delivery.send_due(now=LATER)
    delivery.send_due(now=LATER + timedelta(days=1))
    assert [r.status for r in receiver.requests] == [503, 429, 200]
    assert {r.headers["idempotency-key"] for r in receiver.requests} == {str(event.uid)}
    assert len({r.body for r in receiver.requests}) == 1  # the same payload every time
    assert list(receiver.processed) == [str(event.uid)]  # a deduplicating receiver acts once
    assert attempts() == [(1, "failed", 503, False), (2, "failed", 429, False), (3, "delivered", 200, False)]


@pytest.mark.parametrize(("status", "error"), [(404, "Answered 404."), (302, "redirects are not followed")])
def test_a_final_answer_is_not_retried(rule, receiver, status, error):
    receiver.statuses.append(status)
    fire(rule)
    assert delivery.send_due(now=LATER) == 0
    assert attempts() == [(1, "failed", status, True)]
    assert error in AlertDelivery.objects.get().error


def test_it_gives_up_after_the_last_attempt(rule, receiver, settings):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    receiver.statuses.extend([500, 500, 500])
    fire(rule)
    delivery.send_due(now=LATER)
    delivery.send_due(now=LATER + timedelta(days=1))
    assert attempts() == [(1, "failed", 500, False), (2, "failed", 500, True)]
    assert len(receiver.requests) == 2


def test_backoff_doubles_up_to_an_hour(settings):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 30
    assert 27 <= delivery.backoff_seconds(1) <= 33
    assert 108 <= delivery.backoff_seconds(3) <= 132
    assert delivery.backoff_seconds(12) <= 3600 * 1.1


def test_the_ssrf_guard_applies_at_send_time(rule, receiver, settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []  # loopback is no longer allowed
    fire(rule)
    assert attempts() == [(1, "failed", None, True)]
    assert "UPSTREAM_ALLOWED_NETWORKS" in AlertDelivery.objects.get().error
    assert receiver.requests == []


def test_an_attempt_is_made_once_even_if_two_senders_meet(rule, receiver):
    event = evaluation.create_event(rule, AlertEvent.Kind.FIRED, "", 2.0, (NOW, NOW), NOW)
    pk = event.deliveries.get().pk
    assert delivery.attempt(pk, now=NOW) is not None
    assert delivery.attempt(pk, now=NOW) is None
    assert len(receiver.requests) == 1


def test_an_attempt_left_sending_is_retried(rule, receiver):
    event = evaluation.create_event(rule, AlertEvent.Kind.FIRED, "", 2.0, (NOW, NOW), NOW)
    event.deliveries.update(status="sending", attempted_at=NOW)  # the sender died mid-call
    delivery.send_due(now=NOW + timedelta(minutes=1))
    assert receiver.requests == []  # not stale yet
    delivery.send_due(now=NOW + timedelta(minutes=10))  # marks it failed, schedules attempt 2
    delivery.send_due(now=LATER)
    assert attempts() == [(1, "failed", None, False), (2, "delivered", 200, False)]
    assert "sender stopped" in AlertDelivery.objects.get(attempt=1).error


def test_email_is_retried_when_the_smtp_server_is_down(workspace, settings):
    rule, _ = make_rule(workspace, emails=["ops@example.com"])
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port
    fire(rule)
    assert attempts("email") == [(1, "failed", None, False), (2, "pending", None, False)]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    delivery.send_due(now=LATER)
    assert attempts("email")[-1] == (2, "delivered", None, False)
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]
