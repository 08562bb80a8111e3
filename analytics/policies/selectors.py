"""Reads of policies and of their usage, shared by the dashboard's Policies page, the REST API,
the budget alerts and the gateway's counter rebuild. Usage comes from the one read engine
(analytics.alerts.metrics.window_totals: hourly rollups for whole hours, raw logs at the
edges), so a rebuilt counter and the dashboard agree."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import QuerySet
from django.http import QueryDict

from analytics.alerts import metrics
from analytics.alerts import rules as alert_rules
from analytics.filters import LogFilter
from analytics.policies import rules
from analytics.policies.models import Policy
from analytics.reads.metrics import Metrics
from workspaces.models import Workspace

PREVIEW_ROWS = 20


def policies_of(workspace: Workspace) -> QuerySet[Policy]:
    return Policy.objects.filter(workspace=workspace).select_related("workspace")


def policy_of(workspace: Workspace, policy_id: int) -> Policy | None:
    return policies_of(workspace).filter(pk=policy_id).first()


def used_of(totals: Metrics, kind: str) -> float:
    if kind == "cost":
        return float(totals.cost or 0)
    if kind == "tokens":
        return float(totals.total_tokens or 0)
    return float(totals.requests)


def _filter(scope: str, extra: tuple[str, str] | None = None) -> LogFilter:
    data = QueryDict(mutable=True)
    for param, value in alert_rules.scope_pairs(scope):
        data.appendlist(param, value)
    if extra is not None:
        data.appendlist(*extra)
    log_filter = LogFilter(data, extra_params=())
    log_filter.is_valid()
    return log_filter


def _moment(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def usage_between(
    *, workspace: Workspace, scope: str, per: str, value: str | None, kind: str, start: float, end: float
) -> float:
    """What one counter counts over [start, end): the scope's logs, narrowed to one ``per`` value."""
    extra = rules.per_filter_param(per, value) if per and value is not None else None
    totals = metrics.window_totals(
        workspace=workspace, scope=_filter(scope, extra), window=(_moment(start), _moment(end)), grouping=None
    )
    return used_of(totals[""], kind)


@dataclass(frozen=True)
class UsageRow:
    value: str  # the per value, "" without per
    used: float
    limit: float

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.limit if self.limit else 0.0


def current_usage(policy: Policy, *, now: float | None = None, top: int | None = PREVIEW_ROWS) -> list[UsageRow]:
    """Usage in the current window per scope value, highest first (the top ``top``). Rolling
    windows weight the previous bucket as the gateway's sliding counter does."""
    now = time.time() if now is None else now
    window = policy.window_spec
    tz_name = policy.workspace.time_zone or "UTC"
    _, start, _ = window.bucket(now, tz_name)
    grouping = alert_rules.parse_per(policy.per) if policy.per else None
    scope = _filter(policy.scope)
    totals = metrics.window_totals(
        workspace=policy.workspace, scope=scope, window=(_moment(start), _moment(now)), grouping=grouping
    )
    used = {value: used_of(cell, policy.kind) for value, cell in totals.items()}
    if window.rolling_seconds:
        length = window.rolling_seconds
        weight = 1 - (now - start) / length
        previous = metrics.window_totals(
            workspace=policy.workspace,
            scope=scope,
            window=(_moment(start - length), _moment(start)),
            grouping=grouping,
        )
        for value, cell in previous.items():
            used[value] = used.get(value, 0.0) + used_of(cell, policy.kind) * weight
    if policy.per == "api_key":
        used.pop(metrics.NO_KEY, None)  # requests without a key are not counted per key
    rows = [UsageRow(value, amount, float(policy.limit)) for value, amount in used.items()]
    rows.sort(key=lambda row: (-row.used, row.value))
    return rows[:top] if top else rows
