"""Delivering alert events: signed webhooks and e-mails, every attempt recorded.

Webhooks are POSTed through the one upstream client (workspaces.upstream.probe.post_upstream: the SSRF
guard on the address actually connected to, no redirect followed) with the event's JSON payload
and these headers:

    Content-Type: application/json
    Idempotency-Key: <event uid>              the same on every retry of one event
    X-Portico-Event: alert.fired | alert.resolved | alert.test
    X-Portico-Timestamp: <unix seconds>
    X-Portico-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the rule's secret>
    X-Portico-Delivery-Attempt: <n>

E-mails go through Django's mail backend (settings.EMAIL_*), one message per address.

Retries are rows, not timers: each attempt is an AlertDelivery created ``pending`` with the time
it is due. ``send_due`` (run right after each evaluation and every few seconds by Celery beat, or
by the embedded scheduler without Redis) claims due rows (pending -> sending, one UPDATE, so two
workers never send one attempt), sends, records status code, error and duration, and after a
retryable failure adds the next attempt due after the backoff (ALERT_DELIVERY_BACKOFF_SECONDS,
doubled per attempt, at most an hour, +-10% jitter) until ALERT_DELIVERY_MAX_ATTEMPTS. Celery
countdowns were not used: with Redis as broker a countdown longer than the visibility timeout is
delivered twice. Retryable: no connection, timeouts, 408, 425, 429 and 5xx (SMTP errors for
e-mail); 2xx is delivered; anything else (3xx, other 4xx, an address the SSRF guard refuses) is
final. A row left ``sending`` by a worker that died is given up as failed after
STALE_SENDING_SECONDS and followed by a retry (same idempotency key, so a receiver that did get
it can drop the duplicate).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import smtplib
import time
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portico-Signature"
TIMESTAMP_HEADER = "X-Portico-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BACKOFF_SECONDS = 3600.0
STALE_SENDING_SECONDS = 300
DUE_BATCH = 200
_RETRYABLE_STATUS = {408, 425, 429}

Status = AlertDelivery.Status


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Portico-Signature value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def backoff_seconds(attempt: int) -> float:
    """Delay before attempt ``attempt + 1``."""
    base = min(MAX_BACKOFF_SECONDS, settings.ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** (attempt - 1))
    return base * random.uniform(0.9, 1.1)


# --- Scheduling --------------------------------------------------------------------------


def schedule(event: AlertEvent, rule: AlertRule, *, now: datetime | None = None) -> list[AlertDelivery]:
    """A pending first attempt per channel target of ``rule``, due now."""
    now = now or timezone.now()
    rows = [
        AlertDelivery(workspace_id=event.workspace_id, event=event, channel=channel, target=target, due_at=now)
        for channel, target in rule.channels
    ]
    return AlertDelivery.objects.bulk_create(rows)


def send_due(*, now: datetime | None = None, limit: int = DUE_BATCH) -> int:
    """Send every attempt that is due (oldest first, at most ``limit``); return how many were sent."""
    now = now or timezone.now()
    _give_up_stale(now)
    due = list(
        AlertDelivery.objects.filter(status=Status.PENDING, due_at__lte=now)
        .order_by("due_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(1 for pk in due if attempt(pk, now=now) is not None)


def _give_up_stale(now: datetime) -> None:
    stale = AlertDelivery.objects.filter(
        status=Status.SENDING, attempted_at__lt=now - timedelta(seconds=STALE_SENDING_SECONDS)
    )
    for delivery in stale.select_related("event"):
        claimed = AlertDelivery.objects.filter(pk=delivery.pk, status=Status.SENDING).update(
            status=Status.FAILED, error="No outcome recorded: the sender stopped during the attempt."
        )
        if claimed:
            delivery.refresh_from_db()
            _retry_or_finish(delivery, retryable=True, now=now)


def attempt(delivery_id: int, *, now: datetime | None = None, retry: bool = True) -> AlertDelivery | None:
    """Make one pending attempt if this caller wins the claim; None when another one did."""
    now = now or timezone.now()
    claimed = AlertDelivery.objects.filter(pk=delivery_id, status=Status.PENDING).update(
        status=Status.SENDING, attempted_at=now
    )
    if not claimed:
        return None
    delivery = AlertDelivery.objects.select_related("event", "event__rule").get(pk=delivery_id)
    started = time.monotonic()
    if delivery.channel == "webhook":
        status_code, error, retryable = _send_webhook(delivery)
    else:
        status_code, error, retryable = _send_email(delivery)
    delivery.duration_ms = round((time.monotonic() - started) * 1000, 3)
    delivery.status_code, delivery.error = status_code, error[:2000]
    delivery.status = Status.FAILED if error else Status.DELIVERED
    delivery.save(update_fields=["status", "status_code", "error", "duration_ms"])
    if error:
        logger.warning(
            "Alert delivery %s to %s failed (attempt %d): %s", delivery.pk, delivery.channel, delivery.attempt, error
        )
        _retry_or_finish(delivery, retryable=retryable and retry, now=now)
    return delivery


def _retry_or_finish(delivery: AlertDelivery, *, retryable: bool, now: datetime) -> None:
    if not retryable or delivery.attempt >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        AlertDelivery.objects.filter(pk=delivery.pk).update(final=True)
        delivery.final = True
        return
    AlertDelivery.objects.create(
        workspace_id=delivery.workspace_id,
        event_id=delivery.event_id,
        channel=delivery.channel,
        target=delivery.target,
        attempt=delivery.attempt + 1,
        due_at=now + timedelta(seconds=backoff_seconds(delivery.attempt)),
    )


# --- Channels ----------------------------------------------------------------------------


def _send_webhook(delivery: AlertDelivery) -> tuple[int | None, str, bool]:
    """(status code, error or "", retryable)."""
    from workspaces.upstream.probe import post_upstream

    event, rule = delivery.event, delivery.event.rule
    body = orjson.dumps(event.payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "portico-alerts/1",
        IDEMPOTENCY_HEADER: str(event.uid),
        "X-Portico-Event": f"alert.{event.kind}",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(rule.get_webhook_secret(), timestamp, body),
        "X-Portico-Delivery-Attempt": str(delivery.attempt),
    }
    result = post_upstream(delivery.target, body=body, headers=headers, timeout=settings.ALERT_WEBHOOK_TIMEOUT)
    if result.status is None:
        return None, f"Not delivered: {result.error}.", not result.blocked
    if 200 <= result.status < 300:
        return result.status, "", False
    if 300 <= result.status < 400:
        where = result.location or "an unnamed location"
        return result.status, f"Answered {result.status}, a redirect to {where}: redirects are not followed.", False
    retryable = result.status in _RETRYABLE_STATUS or result.status >= 500
    return result.status, f"Answered {result.status}.", retryable


def _send_email(delivery: AlertDelivery) -> tuple[int | None, str, bool]:
    subject, text = email_message(delivery.event)
    try:
        send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, [delivery.target])
    except (smtplib.SMTPException, OSError) as exc:
        return None, f"Not sent: {exc or type(exc).__name__}.", True
    return None, "", False


def email_message(event: AlertEvent) -> tuple[str, str]:
    """(subject, plain text) of the e-mail for ``event``."""
    p = event.payload
    state = {"fired": "FIRING", "resolved": "RESOLVED", "test": "TEST"}[event.kind]
    value = p.get("scope_value")
    who = f" ({p['per']}={value})" if value and p.get("per") else ""
    measured = f"{_number(p.get('value'))} {p.get('unit', '')}".strip()
    condition = f"{p.get('comparison')} {_number(p.get('threshold'))}"
    subject = f"[Portico] {state}: {p['rule']['name']}{who}: {p.get('metric')} {measured} {condition}"
    lines = [
        f"Alert rule: {p['rule']['name']} (workspace {p.get('workspace')})",
        f"State: {p.get('state')}",
        f"Metric: {p.get('metric')} over {p.get('window', {}).get('label', '')}",
        f"Value: {measured}; threshold {condition}",
        f"Scope: {p.get('scope') or 'every request'}",
    ]
    if p.get("per"):
        lines.append(f"{p['per']}: {value}")
    lines += [f"Window: {p['window']['start']} to {p['window']['end']}", "", f"Dashboard: {p.get('dashboard_url')}"]
    return subject[:250], "\n".join(lines) + "\n"


def _number(value: object) -> str:
    if value is None:
        return "no data"
    return f"{float(value):.6g}"
