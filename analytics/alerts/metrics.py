"""What an alert rule measures: a registry of metric kinds. Each kind computes the current value
of a rule for every scope value (``""`` for a rule without ``per``); the evaluator compares it
with the threshold. The built-in kinds read the same totals the analytics API reads:

    spend        USD of priced requests (unpriced requests are left out, as in every total)
    tokens       prompt + completion tokens
    requests     requests
    error_rate   failed requests (status >= 400) in percent of requests
    p95_latency  95th percentile latency in ms, from the rollups' mergeable histograms

Totals over a window come from the hourly rollups for the whole hours inside it and from the raw
logs only for the partial hours at its edges (a 5-minute window reads five minutes of logs), or
wholly from raw logs when the scope is not a rolled-up dimension (analytics.reads.engine decides,
as for the REST graphs). With ``per``, values folded into "(other)" by the rollups' per-hour cap
are read from raw logs, so every value is measured exactly.

    budget       percent of a policy's limit used in the policy's current window, per scope value
                 of the policy (metric_options {"policy": <id>}; the rule's own window, scope and
                 per are not used): budget thresholds are rules at 50, 80 and 100 (>=)

Adding a kind is a subclass and a ``register`` call (BudgetUsed below is one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from analytics import histogram
from analytics.alerts.models import AlertRule
from analytics.filters import LogFilter
from analytics.reads.engine import OTHER, Grouping, aggregate, choose_source, log_source
from analytics.reads.metrics import Metrics
from workspaces.models import Workspace

NO_KEY = "(none)"  # per api_key: requests without a key (custom logs)


@dataclass(frozen=True)
class MetricQuery:
    rule: AlertRule
    workspace: Workspace
    scope: LogFilter
    window: tuple[datetime, datetime]  # [start, end)
    grouping: Grouping | None


class MetricKind:
    """One thing a rule can measure. ``measure`` returns {scope value: value or None (no data)}."""

    name = ""
    label = ""
    unit = ""
    percent = False  # thresholds are percentages (at most 100)

    def validate(self, rule: AlertRule) -> dict[str, list[str]]:
        """Field errors of ``rule`` this kind adds (the rule's own checks have run)."""
        errors: dict[str, list[str]] = {}
        if rule.metric_options:
            errors["metric_options"] = [f"The {self.name} metric takes no options: leave it empty."]
        if self.percent and rule.threshold is not None and rule.threshold > 100:
            errors["threshold"] = ["A percentage: at most 100."]
        return errors

    def measure(self, query: MetricQuery) -> dict[str, float | None]:
        raise NotImplementedError

    def empty_value(self, rule: AlertRule) -> float | None:
        """The value of a scope value ``measure`` did not return (no request in the window)."""
        return None

    def grouped(self, rule: AlertRule) -> bool:
        """Whether ``measure`` answers per scope value (then each is checked on its own)."""
        return bool(rule.per)


class TotalsMetric(MetricKind):
    """A value read from the window's totals (rollups, raw logs at the edges)."""

    def __init__(
        self,
        name: str,
        label: str,
        unit: str,
        read: Callable[[Metrics, AlertRule], float | None],
        *,
        histograms: bool = False,
        percent: bool = False,
    ) -> None:
        self.name, self.label, self.unit, self.read = name, label, unit, read
        self.histograms, self.percent = histograms, percent

    def measure(self, query: MetricQuery) -> dict[str, float | None]:
        totals = window_totals(
            workspace=query.workspace,
            scope=query.scope,
            window=query.window,
            grouping=query.grouping,
            histograms=self.histograms,
        )
        return {value: self.read(cell, query.rule) for value, cell in totals.items()}

    def empty_value(self, rule: AlertRule) -> float | None:
        return self.read(Metrics(), rule)  # 0 for additive metrics, None for ratios


REGISTRY: dict[str, MetricKind] = {}


def register(kind: MetricKind) -> MetricKind:
    REGISTRY[kind.name] = kind
    return kind


def _enough(totals: Metrics, rule: AlertRule) -> bool:
    return totals.requests >= max(1, rule.min_requests)


register(TotalsMetric("spend", "Spend", "USD", lambda t, rule: float(t.cost)))
register(TotalsMetric("tokens", "Tokens", "tokens", lambda t, rule: float(t.total_tokens)))
register(TotalsMetric("requests", "Requests", "requests", lambda t, rule: float(t.requests)))
register(
    TotalsMetric(
        "error_rate",
        "Error rate",
        "%",
        lambda t, rule: 100.0 * t.errors / t.requests if _enough(t, rule) else None,
        percent=True,
    )
)
register(
    TotalsMetric(
        "p95_latency",
        "p95 latency",
        "ms",
        lambda t, rule: histogram.percentile(t.hist, 95) if _enough(t, rule) else None,
        histograms=True,
    )
)


class BudgetUsed(MetricKind):
    """Percent of a policy's limit used, per scope value of the policy, from the same usage the
    Policies page shows and the gateway rebuilds its counters from."""

    name, label, unit = "budget", "Budget used", "%"

    def validate(self, rule: AlertRule) -> dict[str, list[str]]:
        if self.policy_of(rule) is None:
            return {"metric_options": ['Name a policy of the workspace: {"policy": <id>}.']}
        return {}

    @staticmethod
    def policy_of(rule: AlertRule):
        from analytics.policies.models import Policy

        options = rule.metric_options if isinstance(rule.metric_options, dict) else {}
        policy_id = options.get("policy")
        if not isinstance(policy_id, int) or isinstance(policy_id, bool) or not rule.workspace_id:
            return None
        return Policy.objects.filter(workspace_id=rule.workspace_id, pk=policy_id).select_related("workspace").first()

    def measure(self, query: MetricQuery) -> dict[str, float | None]:
        from analytics.policies.selectors import current_usage

        policy = self.policy_of(query.rule)
        if policy is None:
            return {}
        now = query.window[1].timestamp()
        return {row.value: row.percent for row in current_usage(policy, now=now, top=query.rule.per_limit)}

    def empty_value(self, rule: AlertRule) -> float | None:
        return 0.0

    def grouped(self, rule: AlertRule) -> bool:
        policy = self.policy_of(rule)
        return bool(policy and policy.per)


register(BudgetUsed())


# --- Totals over any window --------------------------------------------------------------


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def split_window(start: datetime, end: datetime) -> tuple[tuple[datetime, datetime] | None, list[tuple]]:
    """The whole hours inside [start, end) (None when there are none) and the partial edges."""
    first = _floor_hour(start)
    if first < start:
        first += timedelta(hours=1)
    last = _floor_hour(end)
    if first >= last:
        return None, [(start, end)] if start < end else []
    edges = [edge for edge in ((start, first), (last, end)) if edge[0] < edge[1]]
    return (first, last), edges


def window_totals(
    *,
    workspace: Workspace,
    scope: LogFilter,
    window: tuple[datetime, datetime],
    grouping: Grouping | None,
    histograms: bool = False,
) -> dict[str, Metrics]:
    """Totals per scope value (``""`` without grouping) over exactly [start, end)."""
    hours, edges = split_window(*window)
    rollup = None
    if hours is not None:
        rollup = choose_source(workspace=workspace, log_filter=scope, window=hours, grouping=grouping)
        grouped_by_key = grouping is not None and grouping.metadata_key is not None
        # A value folded into "(other)" by the rollups' cap is not a scope value: read the logs.
        folded = grouped_by_key and rollup.queryset.annotate(g=rollup.group_expr(grouping)).filter(g=OTHER).exists()
        if not rollup.is_rollup or folded:
            rollup = None  # raw logs answer: one scan of the whole window
    if rollup is None:
        sources = [log_source(workspace, window, scope, grouping)]
    else:
        sources = [rollup, *(log_source(workspace, edge, scope, grouping) for edge in edges)]
    result: dict[str, Metrics] = {}
    for source in sources:
        keys = {"g": source.group_expr(grouping)} if grouping is not None else {}
        for group, totals in aggregate(source, keys, with_histograms=histograms).items():
            value = scope_value_of(group, grouping)
            if value is None:
                continue
            if value in result:
                result[value].add(totals)
            else:
                result[value] = totals
    if grouping is None:
        result.setdefault("", Metrics())
    return result


def scope_value_of(group: tuple, grouping: Grouping | None) -> str | None:
    if grouping is None:
        return ""
    value = group[0]
    if grouping.kind == "api_key":
        return str(value) if value else NO_KEY
    return None if value is None else str(value)
