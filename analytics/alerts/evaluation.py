"""Evaluating alert rules: every enabled rule, every minute (Celery beat's ``evaluate-alerts``, or
the embedded scheduler without Redis), then the due deliveries are sent.

Per rule and scope value (``""`` without ``per``) the condition is ok or firing:

    ok -> firing       a ``fired`` event; notified unless the last 'fired' notification for this
                       scope value is younger than the rule's cooldown (then recorded only)
    firing -> firing   nothing is sent again; the state keeps the latest value
    firing -> ok       a ``resolved`` event, notified when the firing was

A value without data (an error rate below ``min_requests``, a per value gone quiet with a ratio
metric) never breaches, so it resolves. With ``per`` the ``per_limit`` values furthest past the
threshold's side are checked, plus every value currently firing (so each can resolve).

Two evaluators never work on one rule at once: each rule is evaluated in a transaction holding
its row lock (``SELECT ... FOR UPDATE SKIP LOCKED``; another evaluator skips it). On SQLite the
database serialises writers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from analytics.alerts import delivery, metrics, rules
from analytics.alerts.models import AlertEvent, AlertRule, AlertState

logger = logging.getLogger(__name__)

Kind = AlertEvent.Kind


@dataclass
class Outcome:
    """What one evaluation did (for the task's result and tests)."""

    rules: int = 0
    fired: int = 0
    resolved: int = 0
    failed: int = 0


def evaluate_all(*, now: datetime | None = None) -> Outcome:
    """Evaluate every enabled rule; a rule that fails is recorded on it and the rest go on."""
    now = now or timezone.now()
    outcome = Outcome()
    for rule_id in AlertRule.objects.filter(enabled=True).order_by("pk").values_list("pk", flat=True):
        try:
            fired, resolved = evaluate_rule(rule_id, now=now)
        except Exception as exc:
            logger.exception("Alert rule %s could not be evaluated", rule_id)
            AlertRule.objects.filter(pk=rule_id).update(
                checked_at=now, check_error=f"{type(exc).__name__}: {exc}"[:500]
            )
            outcome.failed += 1
            continue
        outcome.rules += 1
        outcome.fired += fired
        outcome.resolved += resolved
    return outcome


def measure(rule: AlertRule, *, now: datetime) -> tuple[dict[str, float | None], tuple[datetime, datetime]]:
    """The rule's current value per scope value, and the window it was measured over."""
    kind = metrics.REGISTRY[rule.metric]
    window = rule.window_spec.bounds(now)
    query = metrics.MetricQuery(
        rule=rule,
        workspace=rule.workspace,
        scope=rules.scope_filter(rule.scope),
        window=window,
        grouping=rules.parse_per(rule.per) if rule.per else None,
    )
    return kind.measure(query), window


def _ranked(rule: AlertRule, values: dict[str, float | None]) -> list[str]:
    """Scope values furthest on the breaching side first (highest for > and >=)."""
    known = [(value, key) for key, value in values.items() if value is not None]
    known.sort(key=lambda item: (-item[0] if rule.comparison in ("gt", "gte") else item[0], item[1]))
    return [key for _, key in known[: rule.per_limit]]


def evaluate_rule(rule_id: int, *, now: datetime) -> tuple[int, int]:
    """Evaluate one rule; returns (fired, resolved) events created."""
    with transaction.atomic():
        # of=self: the workspace row is joined, not locked (the log writer takes KEY SHARE on it).
        rule = (
            AlertRule.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("workspace")
            .filter(pk=rule_id, enabled=True)
            .first()
        )
        if rule is None:  # disabled, deleted, or being evaluated by another worker
            return 0, 0
        values, window = measure(rule, now=now)
        states = {state.scope_value: state for state in rule.states.select_for_update()}
        firing = [key for key, state in states.items() if state.firing]
        kind = metrics.REGISTRY[rule.metric]
        candidates = list(dict.fromkeys([*(_ranked(rule, values) if kind.grouped(rule) else [""]), *firing]))
        fired = resolved = 0
        for key in candidates:
            value = values[key] if key in values else kind.empty_value(rule)
            breach = rules.breaches(value, rule.comparison, rule.threshold)
            state = states.get(key)
            if breach and not (state and state.firing):
                states[key] = _fire(rule, state, key, value, window, now)
                fired += 1
            elif not breach and state and state.firing:
                _resolve(rule, state, value, window, now)
                resolved += 1
            elif state and state.firing:
                state.value, state.checked_at = value, now
                state.save(update_fields=["value", "checked_at"])
        _forget_quiet_states(rule, now)
        AlertRule.objects.filter(pk=rule.pk).update(checked_at=now, check_error="")
    return fired, resolved


def _fire(
    rule: AlertRule, state: AlertState | None, key: str, value: float | None, window: tuple, now: datetime
) -> AlertState:
    cooldown = timedelta(minutes=rule.cooldown_minutes)
    notify = state is None or state.last_notified_at is None or now - state.last_notified_at >= cooldown
    event = create_event(rule, Kind.FIRED, key, value, window, now, notified=notify)
    state = state or AlertState(rule=rule, scope_value=key)
    state.firing, state.since, state.value, state.checked_at = True, now, value, now
    state.fired_event = event
    if notify:
        state.last_notified_at = now
    state.save()
    return state


def _resolve(rule: AlertRule, state: AlertState, value: float | None, window: tuple, now: datetime) -> None:
    notify = state.fired_event.notified if state.fired_event else True
    create_event(rule, Kind.RESOLVED, state.scope_value, value, window, now, notified=notify)
    state.firing, state.since, state.value, state.checked_at, state.fired_event = False, None, value, now, None
    state.save()


def _forget_quiet_states(rule: AlertRule, now: datetime) -> None:
    """Resolved states are kept only while they still matter for the cooldown."""
    horizon = now - timedelta(minutes=rule.cooldown_minutes)
    quiet = Q(last_notified_at__isnull=True) | Q(last_notified_at__lt=horizon)
    rule.states.filter(quiet, firing=False).delete()


# --- Events ------------------------------------------------------------------------------


def create_event(
    rule: AlertRule,
    kind: str,
    scope_value: str,
    value: float | None,
    window: tuple[datetime, datetime],
    now: datetime,
    *,
    notified: bool = True,
) -> AlertEvent:
    """Record an event with its payload; schedule its deliveries when it is ``notified``."""
    event = AlertEvent(
        workspace=rule.workspace,
        rule=rule,
        kind=kind,
        scope_value=scope_value,
        value=value,
        threshold=rule.threshold,
        metric=rule.metric,
        window=rule.window,
        window_start=window[0],
        window_end=window[1],
        notified=notified,
        created_at=now,
    )
    event.payload = payload(rule, event)
    event.save()
    if notified:
        delivery.schedule(event, rule, now=now)
    return event


STATES = {Kind.FIRED: "firing", Kind.RESOLVED: "resolved", Kind.TEST: "test"}


def dashboard_url(rule: AlertRule) -> str:
    from django.urls import NoReverseMatch, reverse

    try:
        path = reverse("dashboard:alerts", args=[rule.workspace.slug])
    except NoReverseMatch:
        path = f"/w/{rule.workspace.slug}/alerts/"
    return f"{settings.PORTICO_BASE_URL}{path}?rule={rule.pk}"


def payload(rule: AlertRule, event: AlertEvent) -> dict:
    """The webhook body (README "Alerts" shows one)."""
    kind = metrics.REGISTRY[rule.metric]
    return {
        "id": str(event.uid),
        "type": f"alert.{event.kind}",
        "state": STATES[event.kind],
        "created_at": event.created_at.isoformat(),
        "workspace": rule.workspace.slug,
        "rule": {"id": rule.pk, "name": rule.name},
        "scope": rule.scope,
        "per": rule.per or None,
        "scope_value": event.scope_value if rule.per or event.scope_value else None,
        "metric": rule.metric,
        "unit": kind.unit,
        "value": event.value,
        "comparison": rule.comparison_symbol,
        "threshold": float(rule.threshold),
        "window": {
            "code": rule.window,
            "label": rule.window_spec.label,
            "start": event.window_start.isoformat(),
            "end": event.window_end.isoformat(),
        },
        "dashboard_url": dashboard_url(rule),
    }
