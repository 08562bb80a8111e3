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

Both are read through ``analytics.reads.cache.read``, the dashboard's closed-period cache, with
the questions the dashboard's charts and tables ask (same cache keys), and only shaped here:
top series, sorting and pages. Distinct users do not add up across the cache's pieces of a
window, so the ``users`` graph alone is counted by the engine over the whole window.

Windows are aligned to whole hours, [floor(start), ceil(end)), because a rollup hour cannot be
split. Derived values: total_tokens = prompt + completion; avg cost is per priced request;
rates are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Case, CharField, Value, When
from django.db.models.expressions import Combinable
from django.db.models.functions import Cast
from django.db.models.lookups import In

from analytics import histogram
from analytics.filters import LogFilter
from analytics.reads.cache import Question, merge_cells, read, source_name
from analytics.reads.engine import OTHER, Grouping, ReportError, aggregate, choose_source
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
    if metric == "users":
        source_name, chart = _user_chart(workspace, log_filter, window, interval, grouping)
    else:
        source_name, chart = _cached_chart(workspace, log_filter, window, interval, grouping, metric == "latency")
    stamps = _timestamps(window, interval)
    result = {
        "object": "analytics.graph",
        "metric": metric,
        "source": source_name,
        "interval": interval,
        "start": window[0],
        "end": window[1],
        "summary": chart.summary.metric(metric),
        "data_points": _points(stamps, chart.overall, metric, lambda key: True),
    }
    if grouping is not None:
        result["group_by"] = group_by
        result["series"] = _series(stamps, chart, metric)
    return result


@dataclass
class _Chart:
    """A graph's cells per (bucket,) or (bucket, series name), what the data points add up
    (``overall``), the window's total and the series names in order; ``series_users`` holds
    each series' distinct users (they do not add up from the cells)."""

    cells: dict[tuple, Metrics]
    overall: dict[tuple, Metrics]
    summary: Metrics
    names: list[str] = field(default_factory=list)
    series_users: dict[str, int] = field(default_factory=dict)


def _cached_chart(workspace, log_filter, window, interval, grouping, hist: bool) -> tuple[str, _Chart]:
    """Additive metrics through the closed-period cache, under the key a dashboard chart of the
    same question uses (with latency histograms for the latency graph, as the Overview and
    Summary charts read them; without, as the Errors page does)."""
    question = Question((interval, "group") if grouping else (interval,), grouping and grouping.text, hist=hist)
    cells = read(workspace, *window, question, log_filter)
    names: list[str] = []
    if grouping is not None:
        ranked = merge_cells([cells], key=lambda group: group[1])
        top = [value for value, _ in sorted(ranked.items(), key=lambda i: (-i[1].requests, str(i[0])))][:TOP_SERIES]
        has_rest = len(ranked) > len(top)
        cells = merge_cells([cells], key=lambda group: (group[0], _series_name(group[1], top, has_rest)))
        names = _names(top, cells)
    return source_name(workspace, *window, question, log_filter), _Chart(cells, cells, _sum(cells.values()), names)


def _series_name(value: object, top: list, has_rest: bool) -> str | None:
    """The series a group value is drawn in: its text, or OTHER past the top values (a NULL
    value is never among them, as SQL's IN never matches NULL)."""
    if has_rest and (value is None or value not in top):
        return OTHER
    return None if value is None else str(value)


def _names(top: list, cells: dict[tuple, Metrics]) -> list[str]:
    names = [str(v) for v in top]
    if any(key[1] == OTHER for key in cells) and OTHER not in names:
        names.append(OTHER)
    return names


def _user_chart(workspace, log_filter, window, interval, grouping) -> tuple[str, _Chart]:
    """Distinct users, from the engine: a distinct count does not add up across the cached
    pieces of a window, so it is counted over the whole window each time."""
    source = choose_source(workspace=workspace, log_filter=log_filter, window=window, grouping=grouping, users=True)
    keys: dict[str, Combinable] = {"t": source.bucket_expr(interval)}
    top: list = []
    if grouping is not None:
        group_expr = source.group_expr(grouping)
        ranked = aggregate(source, {"g": group_expr})
        top = [g for g, _ in sorted(ranked.items(), key=lambda i: (-i[1].requests, str(i[0][0])))][:TOP_SERIES]
        top = [g[0] for g in top]
        keys["g"] = _top_or_other(group_expr, top, len(ranked) > len(top))
    cells = aggregate(source, keys, users=True)
    summary = _sum(cells.values())
    summary.users = aggregate(source, {}, users=True)[()].users
    chart = _Chart(cells, cells, summary)
    if grouping is not None:
        chart.overall = aggregate(source, {"t": keys["t"]}, users=True)
        chart.names = _names(top, cells)
        distinct = aggregate(source, {"g": keys["g"]}, users=True)
        chart.series_users = {name: distinct.get((name,), Metrics()).users for name in chart.names}
    return source.name, chart


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


def _series(stamps: list[datetime], chart: _Chart, metric: str) -> list[dict]:
    series = []
    for name in chart.names:
        summary = _sum(totals for key, totals in chart.cells.items() if key[1] == name)
        if metric == "users":
            summary.users = chart.series_users.get(name, 0)
        points = _points(stamps, chart.cells, metric, lambda key, name=name: key[1] == name)
        series.append({"value": name, "summary": summary.metric(metric), "data_points": points})
    return series


# --- Groups ------------------------------------------------------------------------------

# The group columns (analytics.reads.metrics.SORT_COLUMNS) ``ordering`` accepts, each with how a
# group's Metrics sorts by it.
GROUP_ORDERING: dict[str, Callable[[Metrics], object]] = {
    "value": lambda cell: None,  # sorted by the value itself
    "requests": lambda cell: cell.requests,
    "errors": lambda cell: cell.errors,
    "success_rate": lambda cell: 1.0 - cell.errors / cell.requests,
    "cost": lambda cell: cell.cost,
    "prompt_tokens": lambda cell: cell.prompt_tokens,
    "completion_tokens": lambda cell: cell.completion_tokens,
    "total_tokens": lambda cell: cell.total_tokens,
    "avg_tokens": lambda cell: cell.total_tokens / cell.requests,
    "avg_latency_ms": lambda cell: cell.latency_sum_ms / cell.requests,
    "p95_latency_ms": lambda cell: histogram.percentile(cell.hist, 95),
    "last_seen": lambda cell: cell.last_seen,
}
assert set(GROUP_ORDERING) == set(SORT_COLUMNS) - {"share"}
# The dimension-specific name each group row also carries (Portkey's field names).
GROUP_VALUE_NAMES = {"metadata": "metadata_value", "user": "user", "model": "model", "provider": "provider"}


def groups(
    *,
    workspace: Workspace,
    log_filter: LogFilter,
    grouping: Grouping,
    ordering: str = "-requests",
    page: int = 1,
    page_size: int = 50,
) -> dict:
    """Totals per value of ``grouping`` over the filtered window, sorted and paginated. Read
    through the closed-period cache under the key of the dashboard's table of the same
    grouping and filter, so either one warms the other."""
    descending = ordering.startswith("-")
    column = ordering.lstrip("-")  # the canonical names only: the aliases are old dashboard links
    if column not in GROUP_ORDERING:
        raise ReportError("ordering", f"Order by one of: {', '.join(GROUP_ORDERING)} (prefix - for descending).")
    window = align_to_hours(*log_filter.window)
    question = Question(("group",), grouping.text, hist=True)
    # Groups without requests are not listed (nor divided by), as when this was SQL.
    cells = {value: cell for (value,), cell in read(workspace, *window, question, log_filter).items() if cell.requests}
    rows = _sorted_groups(cells, column, descending)
    offset = (page - 1) * page_size
    page_rows = rows[offset : offset + page_size]
    names = _api_key_names(workspace, page_rows) if grouping.kind == "api_key" else {}
    return {
        "object": "list",
        "source": source_name(workspace, *window, question, log_filter),
        "start": window[0],
        "end": window[1],
        "total": len(rows),
        "page": page,
        "page_size": page_size,
        "has_more": offset + len(page_rows) < len(rows),
        "data": [_group_row(grouping, value, cell, names) for value, cell in page_rows],
    }


def _sorted_groups(cells: dict[object, Metrics], column: str, descending: bool) -> list[tuple[object, Metrics]]:
    """Groups by ``column``, ties by value, as PostgreSQL ordered them when this was SQL: a NULL
    value is last ascending and first descending. Groups without a p95 go last either way."""
    if column == "p95_latency_ms":
        p95 = GROUP_ORDERING[column]
        rows = sorted(cells.items(), key=lambda item: str(item[0]))
        rows.sort(key=lambda r: (p95(r[1]) is None, -(p95(r[1]) or 0) if descending else (p95(r[1]) or 0)))
        return rows
    rows = sorted(cells.items(), key=lambda item: (item[0] is None, item[0] if item[0] is not None else ""))
    if column == "value":
        return rows[::-1] if descending else rows
    sort_key = GROUP_ORDERING[column]
    # A stable sort keeps the ties in value order, also when reversed.
    return sorted(rows, key=lambda row: sort_key(row[1]), reverse=descending)


def _api_key_names(workspace: Workspace, rows: list[tuple[object, Metrics]]) -> dict[int, str]:
    ids = [value for value, _ in rows if value]
    return dict(ApiKey.objects.filter(workspace=workspace, id__in=ids).values_list("id", "name"))


def _group_row(grouping: Grouping, value: object, totals: Metrics, names: dict[int, str]) -> dict:
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
