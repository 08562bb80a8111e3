"""Dashboard aggregates under a log filter (Summary, Users, Errors and Overview with the Logs
page's filter vocabulary: metadata eq/ne/in/exists, model, provider, api key, status, user).

Unfiltered pages keep reading through analytics.reads.cache (closed days cached, the page
p95 budget). A filtered page asks analytics.reads.engine for the source that answers exactly:
DimensionRollup for provider/model/api key/success filters, MetadataRollup for one metadata
equality (or ``user``), and the raw logs, through the GIN index on ``metadata``, for anything
else (two metadata pairs, ``ne``, ``exists``, status codes, a pair plus a model...). Answers are
Cells, the dashboard's metrics type, so the pages shape them exactly as unfiltered ones.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import F
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce

from analytics.filters import LogFilter
from analytics.forms import Window
from analytics.reads.cache import Cell
from analytics.reads.engine import Grouping, Source, Totals, aggregate, aware, choose_source
from workspaces.models import Workspace


def is_filtered(log_filter: LogFilter | None) -> bool:
    """Whether ``log_filter`` narrows the logs beyond the window."""
    return bool(log_filter is not None and (log_filter.active_filters() or log_filter.metadata_conditions))


def cell_of(totals: Totals) -> Cell:
    return Cell(
        requests=totals.requests,
        errors=totals.errors,
        cost=totals.cost,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        latency_sum=totals.latency_sum_ms,
        last_seen=totals.last_seen,
        hist=totals.hist,
        cached_prompt_tokens=totals.cached_prompt_tokens,
        reasoning_tokens=totals.reasoning_tokens,
        unpriced_requests=totals.unpriced_requests,
        cache_write_tokens=totals.cache_write_tokens,
        audio_prompt_tokens=totals.audio_prompt_tokens,
        audio_completion_tokens=totals.audio_completion_tokens,
    )


def _source(workspace: Workspace, window: Window, log_filter: LogFilter, grouping: Grouping | None, **kw) -> Source:
    return choose_source(
        workspace=workspace, log_filter=log_filter, window=(window.start, window.end), grouping=grouping, **kw
    )


def hourly(workspace: Workspace, window: Window, log_filter: LogFilter, *, hist: bool) -> dict[datetime, Cell]:
    """Filtered totals per hour of the window."""
    source = _source(workspace, window, log_filter, None)
    cells = aggregate(source, {"t": source.bucket_expr("hour")}, with_histograms=hist)
    return {aware(group[0]): cell_of(totals) for group, totals in cells.items() if totals.requests}


def total(workspace: Workspace, window: Window, log_filter: LogFilter, *, hist: bool) -> Cell:
    source = _source(workspace, window, log_filter, None)
    return cell_of(aggregate(source, {}, with_histograms=hist)[()])


def unique_users(workspace: Workspace, window: Window, log_filter: LogFilter) -> int:
    source = _source(workspace, window, log_filter, None, users=True)
    return aggregate(source, {}, users=True)[()].users


def groups(workspace: Workspace, window: Window, log_filter: LogFilter, dimension: str, *, hist: bool) -> dict:
    """{value: Cell} for every value of ``dimension`` (the dashboard's group names) among the
    filtered logs that carry it."""
    grouping = Grouping.parse(dimension)
    source = _source(workspace, window, log_filter, grouping)
    cells = aggregate(source, {"g": source.group_expr(grouping)}, with_histograms=hist)
    return {group: cell_of(totals) for group, totals in cells.items() if totals.requests}


def _dimension_exprs(source: Source) -> dict[str, Combinable]:
    if source.is_rollup:
        return {name: F(name) for name in ("provider", "model", "api_key_id", "status_class", "status_code")}
    return {
        "provider": F("provider"),
        "model": F("model"),
        "api_key_id": Coalesce("api_key_id", 0),
        "status_class": F("status_code") / 100,
        "status_code": F("status_code"),
    }


def dimension_cells(workspace: Workspace, window: Window, log_filter: LogFilter) -> dict[tuple, Cell]:
    """What the Errors page's tables read: cells per (provider, model, api key, status class,
    status code), from DimensionRollup or the logs (a metadata filter is never rolled up with
    these dimensions)."""
    source = _source(workspace, window, log_filter, Grouping("model"))
    keys = {f"d_{name}": expr for name, expr in _dimension_exprs(source).items()}
    cells = aggregate(source, keys)
    return {group: cell_of(totals) for group, totals in cells.items() if totals.requests}


def group_series(workspace: Workspace, window: Window, log_filter: LogFilter, dimension: str) -> dict[tuple, Cell]:
    """{(value, chart bucket): Cell} of the filtered logs (the Summary chart)."""
    grouping = Grouping.parse(dimension)
    source = _source(workspace, window, log_filter, grouping)
    keys = {"g": source.group_expr(grouping), "t": source.bucket_expr(window.step)}
    return {(g, aware(t)): cell_of(totals) for (g, t), totals in aggregate(source, keys).items()}
