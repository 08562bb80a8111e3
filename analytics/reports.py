"""Analytics over a time window: graphs (a metric per hour or day) and groups (totals per
metadata value, user, model, provider or API key).

They read the hourly rollups, never raw logs, whenever the rollups can answer exactly:

- DimensionRollup answers the window plus provider / model / api_key / success filters, and
  grouping by model, provider or API key;
- MetadataRollup answers the window plus ONE metadata equality (``metadata.k=v``,
  ``metadata.k__in=a,b``, ``metadata={"k": "v"}`` or ``user=``), and grouping by a metadata
  key or user.

Any other combination (ranges, status codes, two metadata pairs, a pair plus a provider,
...) is aggregated from the raw logs inside the same hour-aligned window, and the answer says
so: ``source`` is ``"rollups"`` or ``"logs"``. Both paths compute the same additive metrics and
the same latency histograms (analytics.histogram), so their numbers agree.

Windows are aligned to whole hours, [floor(start), ceil(end)), because a rollup hour cannot be
split. Derived values: total_tokens = prompt + completion; avg cost is per priced request;
rates are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from django.db.models import Case, CharField, F, FloatField, Value, When
from django.db.models.expressions import Combinable
from django.db.models.functions import Cast
from django.db.models.lookups import In

from analytics import histogram
from analytics.filters import LogFilter
from analytics.reads.engine import OTHER, Grouping, ReportError, Source, aggregate, choose_source, histograms
from analytics.reads.metrics import SORT_COLUMNS, Metrics, aware, rounded
from analytics.reads.window import align_to_hours
from workspaces.models import ApiKey, Workspace

GRAPH_METRICS = ("requests", "cost", "tokens", "latency", "errors", "error-rate", "users")
TOP_SERIES = 10
MAX_POINTS = 10_000
INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
__all__ = ["GRAPH_METRICS", "INTERVALS", "Grouping", "ReportError", "graph", "groups"]


# --- Graphs ------------------------------------------------------------------------------


def _interval_for(window: tuple[datetime, datetime], interval: str | None) -> str:
    chosen = interval or ("hour" if window[1] - window[0] <= timedelta(days=3) else "day")
    if (window[1] - window[0]) / INTERVALS[chosen] > MAX_POINTS:
        raise ReportError("interval", f"The window holds more than {MAX_POINTS} {chosen}s: narrow it or use day.")
    return chosen


def _timestamps(window: tuple[datetime, datetime], interval: str) -> list[datetime]:
    current = window[0] if interval == "hour" else window[0].replace(hour=0)
    points = []
    while current < window[1]:
        points.append(current)
        current += INTERVALS[interval]
    return points


def graph(
    *,
    workspace: Workspace,
    log_filter: LogFilter,
    metric: str,
    interval: str | None = None,
    group_by: str | None = None,
) -> dict:
    """``metric`` per interval over the filtered window, optionally split into series by the
    top values of ``group_by`` (the rest summed under OTHER)."""
    window = align_to_hours(*log_filter.window)
    interval = _interval_for(window, interval)
    grouping = Grouping.parse(group_by) if group_by else None
    users = metric == "users"
    source = choose_source(workspace=workspace, log_filter=log_filter, window=window, grouping=grouping, users=users)
    keys: dict[str, Combinable] = {"t": source.bucket_expr(interval)}
    top: list = []
    if grouping is not None:
        group_expr = source.group_expr(grouping)
        ranked = aggregate(source, {"g": group_expr})
        top = [g for g, _ in sorted(ranked.items(), key=lambda i: (-i[1].requests, str(i[0][0])))][:TOP_SERIES]
        top = [g[0] for g in top]
        keys["g"] = _top_or_other(group_expr, top, len(ranked) > len(top))
    cells = aggregate(source, keys, users=users, with_histograms=metric == "latency")
    # Totals add up from the cells; distinct users do not, so they are counted again.
    summary = _sum(cells.values())
    overall = cells
    if users:
        summary.users = aggregate(source, {}, users=True)[()].users
        if grouping is not None:
            overall = aggregate(source, {"t": keys["t"]}, users=True)
    stamps = _timestamps(window, interval)
    result = {
        "object": "analytics.graph",
        "metric": metric,
        "source": source.name,
        "interval": interval,
        "start": window[0],
        "end": window[1],
        "summary": summary.metric(metric),
        "data_points": _points(stamps, overall, metric, lambda key: True),
    }
    if grouping is not None:
        result["group_by"] = group_by
        result["series"] = _series(stamps, cells, metric, top, source, keys, users)
    return result


def _top_or_other(expr: Combinable, top: list, has_rest: bool) -> Combinable:
    as_text = Cast(expr, CharField())
    if not has_rest:
        return as_text
    return Case(When(In(expr, top), then=as_text), default=Value(OTHER), output_field=CharField())


def _points(stamps: list[datetime], cells: dict[tuple, Metrics], metric: str, wanted: Callable) -> list[dict]:
    per_stamp: dict[datetime, Metrics] = {}
    for key, totals in cells.items():
        if wanted(key):
            per_stamp.setdefault(aware(key[0]), Metrics()).add(totals)
    return [{"timestamp": stamp, **per_stamp.get(stamp, Metrics()).metric(metric)} for stamp in stamps]


def _sum(cells) -> Metrics:
    total = Metrics()
    for totals in cells:
        total.add(totals)
    return total


def _series(stamps, cells, metric, top, source, keys, users) -> list[dict]:
    names = [str(v) for v in top]
    if any(key[1] == OTHER for key in cells) and OTHER not in names:
        names.append(OTHER)
    distinct_users = aggregate(source, {"g": keys["g"]}, users=True) if users else {}
    series = []
    for name in names:
        summary = _sum(totals for key, totals in cells.items() if key[1] == name)
        if users:
            summary.users = distinct_users.get((name,), Metrics()).users
        points = _points(stamps, cells, metric, lambda key, name=name: key[1] == name)
        series.append({"value": name, "summary": summary.metric(metric), "data_points": points})
    return series


# --- Groups ------------------------------------------------------------------------------

# The SQL alias that sorts each of the group columns (analytics.reads.metrics.SORT_COLUMNS)
# ``ordering`` accepts (p95 is read from histograms, so it sorts in Python).
_ORDER_ALIASES = {
    "value": "g",
    "requests": "m_requests",
    "errors": "m_errors",
    "cost": "m_cost",
    "prompt_tokens": "m_prompt_tokens",
    "completion_tokens": "m_completion_tokens",
    "p95_latency_ms": None,
    "last_seen": "m_last_seen",
}
GROUP_ORDERING = {name: _ORDER_ALIASES.get(name, name) for name in SORT_COLUMNS if name != "share"}
# The dimension-specific name each group row also carries (Portkey's field names).
GROUP_VALUE_NAMES = {"metadata": "metadata_value", "user": "user", "model": "model", "provider": "provider"}


def _per_request(expr: Combinable) -> Combinable:
    return Cast(expr, FloatField()) / Cast(F("m_requests"), FloatField())


def groups(
    *,
    workspace: Workspace,
    log_filter: LogFilter,
    grouping: Grouping,
    ordering: str = "-requests",
    page: int = 1,
    page_size: int = 50,
) -> dict:
    """Totals per value of ``grouping`` over the filtered window, sorted and paginated."""
    descending = ordering.startswith("-")
    column = ordering.lstrip("-")  # the canonical names only: the aliases are old dashboard links
    if column not in GROUP_ORDERING:
        raise ReportError("ordering", f"Order by one of: {', '.join(GROUP_ORDERING)} (prefix - for descending).")
    window = align_to_hours(*log_filter.window)
    source = choose_source(workspace=workspace, log_filter=log_filter, window=window, grouping=grouping)
    expr = source.group_expr(grouping)
    rows = (
        source.queryset.annotate(g=expr)
        .values("g")
        .annotate(**source.sums)
        .annotate(
            total_tokens=F("m_prompt_tokens") + F("m_completion_tokens"),
            avg_tokens=_per_request(F("m_prompt_tokens") + F("m_completion_tokens")),
            avg_latency_ms=_per_request(F("m_latency_sum_ms")),
            success_rate=1.0 - _per_request(F("m_errors")),
        )
        .filter(m_requests__gt=0)
    )
    offset = (page - 1) * page_size
    if GROUP_ORDERING[column] is None:
        every = list(rows)
        total = len(every)
        page_rows = _sorted_by_p95(source, expr, every, descending)[offset : offset + page_size]
    else:
        order = f"{'-' if descending else ''}{GROUP_ORDERING[column]}"
        tie = "g" if column != "value" else None
        # One row past the page: when it is missing, the total is known without a COUNT.
        fetched = list(rows.order_by(*[o for o in (order, tie) if o])[offset : offset + page_size + 1])
        page_rows = fetched[:page_size]
        complete = len(fetched) <= page_size and (fetched or offset == 0)
        total = offset + len(fetched) if complete else rows.count()
        _attachhistograms(source, expr, page_rows)
    names = _api_key_names(workspace, page_rows) if grouping.kind == "api_key" else {}
    return {
        "object": "list",
        "source": source.name,
        "start": window[0],
        "end": window[1],
        "total": total,
        "page": page,
        "page_size": page_size,
        "has_more": offset + len(page_rows) < total,
        "data": [_group_row(grouping, row, names) for row in page_rows],
    }


def _attachhistograms(source: Source, expr: Combinable, rows: list[dict]) -> None:
    if not rows:
        return
    values = [row["g"] for row in rows]
    subset = replace(source, queryset=source.queryset.filter(In(expr, values)))
    hists = histograms(subset, {"g": expr})
    for row in rows:
        row["hist"] = hists.get((row["g"],), {})


def _sorted_by_p95(source: Source, expr: Combinable, rows: list[dict], descending: bool) -> list[dict]:
    hists = histograms(source, {"g": expr})
    for row in rows:
        row["hist"] = hists.get((row["g"],), {})
        row["p95"] = histogram.percentile(row["hist"], 95)
    # Groups without a percentile sort last either way; ties by value.
    rows.sort(key=lambda r: str(r["g"]))
    rows.sort(key=lambda r: (r["p95"] is None, -(r["p95"] or 0) if descending else (r["p95"] or 0)))
    return rows


def _api_key_names(workspace: Workspace, rows: list[dict]) -> dict[int, str]:
    ids = [row["g"] for row in rows if row["g"]]
    return dict(ApiKey.objects.filter(workspace=workspace, id__in=ids).values_list("id", "name"))


def _group_row(grouping: Grouping, row: dict, names: dict[int, str]) -> dict:
    totals = Metrics.from_row(row)
    totals.hist = row.get("hist", {})
    value = row["g"]
    result = {"value": value}
    if grouping.kind == "api_key":
        result.update(api_key_id=value or None, name=names.get(value, ""))
    else:
        result[GROUP_VALUE_NAMES[grouping.kind]] = value
    result.update(
        requests=totals.requests,
        errors=totals.errors,
        success_rate=rounded(1 - totals.errors / totals.requests, 6),
        cost=rounded(totals.cost, 8),
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        cached_prompt_tokens=totals.cached_prompt_tokens,
        cache_write_tokens=totals.cache_write_tokens,
        reasoning_tokens=totals.reasoning_tokens,
        audio_prompt_tokens=totals.audio_prompt_tokens,
        audio_completion_tokens=totals.audio_completion_tokens,
        total_tokens=totals.total_tokens,
        unpriced_requests=totals.unpriced_requests,
        avg_tokens=rounded(totals.total_tokens / totals.requests, 3),
        avg_latency_ms=rounded(totals.latency_sum_ms / totals.requests, 3),
        p95_latency_ms=histogram.percentile(totals.hist, 95),
        last_seen=totals.last_seen,
    )
    return result
