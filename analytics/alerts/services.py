"""Writes to alert rules (create, update, delete) and the test-send, for every caller: dashboard,
REST API, admin, a shell. Each one is validated (``full_clean``: errors keyed by field) and
recorded in the workspace's audit trail in the same transaction (workspaces.services). The
webhook secret is encrypted at rest like provider keys and never audited or shown again after
the call that set it (the trail records ``webhook_secret: changed``)."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from analytics.alerts import delivery, evaluation
from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule
from workspaces.audit import (
    Actor,
    audit_record,
    audit_snapshot,
    delete_audited,
    register_audited,
    save_audited,
    stored_snapshot,
)
from workspaces.models import AuditEvent, Workspace

RULE_FIELDS = [
    "name",
    "scope",
    "per",
    "per_limit",
    "metric",
    "metric_options",
    "window",
    "comparison",
    "threshold",
    "min_requests",
    "cooldown_minutes",
    "webhook_urls",
    "emails",
    "enabled",
]
register_audited(AlertRule, object_type="alert_rule", fields=RULE_FIELDS)


def generate_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def alert_rule_create(
    *,
    workspace: Workspace,
    name: str,
    metric: str,
    threshold: Decimal | float | str,
    webhook_secret: str | None = None,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    **fields: object,
) -> tuple[AlertRule, str]:
    """Create a rule; returns it with its webhook secret (generated unless given), which is
    not shown again. ``fields``: any other rule field (scope, per, window, ...)."""
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"Unknown alert rule fields: {', '.join(sorted(unknown))}")
    rule = AlertRule(workspace=workspace, name=name, metric=metric, threshold=_decimal(threshold), **fields)
    secret = webhook_secret or generate_webhook_secret()
    rule.set_webhook_secret(secret)
    rule.full_clean()
    save_audited(rule, action="alert_rule.create", before={}, actor=actor, via=via)
    return rule, secret


def alert_rule_update(
    *,
    rule: AlertRule,
    webhook_secret: str | None = None,
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
    **fields: object,
) -> AlertRule:
    """Change a rule. ``webhook_secret``: None keeps the stored one, a value replaces it.
    Disabling a rule forgets its states (nothing fires or resolves while it is off)."""
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"Unknown alert rule fields: {', '.join(sorted(unknown))}")
    before = stored_snapshot(rule)
    for name, value in fields.items():
        setattr(rule, name, _decimal(value) if name == "threshold" else value)
    if webhook_secret:
        rule.set_webhook_secret(webhook_secret)
    rule.full_clean()
    with transaction.atomic():
        save_audited(
            rule,
            action="alert_rule.update" if before else "alert_rule.create",
            before=before,
            actor=actor,
            via=via,
            after_extra={"webhook_secret": "changed"} if webhook_secret else None,
            only_if_changed=True,
        )
        if not rule.enabled:
            rule.states.all().delete()
    return rule


def alert_rule_rotate_secret(*, rule: AlertRule, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> str:
    """Replace the webhook secret with a new random one; returns it (shown once)."""
    secret = generate_webhook_secret()
    alert_rule_update(rule=rule, webhook_secret=secret, actor=actor, via=via)
    return secret


def alert_rule_delete(*, rule: AlertRule, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    """Delete a rule with its states, events and delivery records."""
    delete_audited(rule, action="alert_rule.delete", actor=actor, via=via)


def alert_rule_test_send(
    *, rule: AlertRule, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM
) -> list[AlertDelivery]:
    """Send a ``test`` event with the rule's current value to each of its channels now, once
    (no retries), and return the attempts. Recorded in the audit trail and the event history."""
    if not rule.channels:
        raise ValidationError({"webhook_urls": "Add a webhook URL or an e-mail address to test."})
    now = timezone.now()
    values, window = evaluation.measure(rule, now=now)
    ranked = [key for key in values if values[key] is not None]
    ranked.sort(key=lambda key: -values[key] if rule.comparison in ("gt", "gte") else values[key])
    scope_value = ranked[0] if ranked else ""
    event = evaluation.create_event(rule, AlertEvent.Kind.TEST, scope_value, values.get(scope_value), window, now)
    attempts = [
        delivery.attempt(pk, now=now, retry=False)
        for pk in event.deliveries.order_by("pk").values_list("pk", flat=True)
    ]
    attempts = [made for made in attempts if made is not None]
    audit_record(
        workspace=rule.workspace,
        action="alert_rule.test_send",
        obj=rule,
        before={},
        after={
            **audit_snapshot(rule),
            "test_event": str(event.uid),
            "delivered": sum(1 for made in attempts if made.status == AlertDelivery.Status.DELIVERED),
            "failed": sum(1 for made in attempts if made.status != AlertDelivery.Status.DELIVERED),
        },
        actor=actor,
        via=via,
    )
    return attempts


def _decimal(value: object) -> object:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return Decimal(str(value).strip())
        except ArithmeticError:
            raise ValidationError({"threshold": "Enter a number."}) from None
    return value
