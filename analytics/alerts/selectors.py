"""Reads of alert rules, events and deliveries shared by the REST API and the dashboard's Alerts
page, always within one workspace. Event and delivery lists are newest first with keyset
pagination on the id (``cursor`` is the last id of the previous page)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from analytics.alerts.models import AlertDelivery, AlertEvent, AlertRule, AlertState
from workspaces.models import Workspace

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def rules_of(workspace: Workspace) -> QuerySet[AlertRule]:
    return (
        AlertRule.objects.filter(workspace=workspace)
        .select_related("workspace")
        .prefetch_related(Prefetch("states", queryset=AlertState.objects.order_by("scope_value")))
    )


def rule_of(workspace: Workspace, rule_id: int) -> AlertRule | None:
    return rules_of(workspace).filter(pk=rule_id).first()


def events_page(
    workspace: Workspace, *, rule_id: int | None = None, cursor: int | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> tuple[list[AlertEvent], int | None]:
    """(events, next cursor or None)."""
    events = AlertEvent.objects.filter(workspace=workspace).select_related("rule")
    if rule_id is not None:
        events = events.filter(rule_id=rule_id)
    return _page(events, cursor, limit)


def deliveries_page(
    workspace: Workspace,
    *,
    rule_id: int | None = None,
    cursor: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> tuple[list[AlertDelivery], int | None]:
    deliveries = AlertDelivery.objects.filter(workspace=workspace).select_related("event", "event__rule")
    if rule_id is not None:
        deliveries = deliveries.filter(event__rule_id=rule_id)
    return _page(deliveries, cursor, limit)


def _page(queryset: QuerySet, cursor: int | None, limit: int) -> tuple[list, int | None]:
    if cursor is not None:
        queryset = queryset.filter(pk__lt=cursor)
    rows = list(queryset.order_by("-pk")[: limit + 1])
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].pk
    return rows, None
