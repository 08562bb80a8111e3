"""Dashboard aggregates under a log filter (Summary, Users, Errors and Overview with the Logs
page's filter vocabulary: metadata eq/ne/in/exists, model, provider, api key, status, user).

Unfiltered pages keep reading through analytics.reads.cache (closed days cached, the page
p95 budget). A filtered page asks analytics.reads.engine for the source that answers exactly:
DimensionRollup for provider/model/api key/success filters, MetadataRollup for one metadata
equality (or ``user``), and the raw logs, through the GIN index on ``metadata``, for anything
else (two metadata pairs, ``ne``, ``exists``, status codes, a pair plus a model...). Answers are
Cells, the dashboard's metrics type, so the pages shape them exactly as unfiltered ones.

Closed periods are cached like the unfiltered pages' (analytics.reads.cache): a window is cut
into the closed hours before its first whole UTC day, its closed whole days, the closed hours
after them, and the last STABLE_AFTER hours; every closed piece's cells are kept in the shared
cache under the filter, the question asked and the workspace's data generation (bumped when a
closed hour changes), so a repeated or slid window asks the database only about its open end.
Distinct users do not add up across pieces and are counted over the whole window each time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime

import orjson
from django.core.cache import cache
from django.db.models import F
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce
from django.utils import timezone

from analytics.filters import LogFilter
from analytics.forms import Window
from analytics.reads.cache import CLOSED_DAY_TTL, DAY, STABLE_AFTER, data_generation, merge_cells
from analytics.reads.engine import OTHER, Grouping, Source, aggregate, choose_source
from analytics.reads.metrics import Metrics, aware
from workspaces.models import Workspace

logger = logging.getLogger(__name__)
CACHE_VERSION = 1


def is_filtered(log_filter: LogFilter | None) -> bool:
    """Whether ``log_filter`` narrows the logs beyond the window."""
    return bool(log_filter is not None and (log_filter.active_filters() or log_filter.metadata_conditions))


def _source(workspace: Workspace, window: Window, log_filter: LogFilter, grouping: Grouping | None, **kw) -> Source:
    return choose_source(
        workspace=workspace, log_filter=log_filter, window=(window.start, window.end), grouping=grouping, **kw
    )


def _pieces(window: Window, stable: datetime) -> tuple[list[tuple[datetime, datetime]], tuple | None]:
    """(closed pieces, open piece or None) of ``window``: see the module docstring."""
    closed_end = min(window.end, stable)
    pieces = []
    start = window.start
    first_day = start.replace(hour=0) + (DAY if start.hour else DAY * 0)
    if first_day > start and first_day <= closed_end:
        pieces.append((start, first_day))
        start = first_day
    while start + DAY <= closed_end:
        pieces.append((start, start + DAY))
        start += DAY
    if start < closed_end:
        pieces.append((start, closed_end))
    opened = (max(window.start, stable), window.end) if window.end > stable else None
    return pieces, opened


def _signature(workspace: Workspace, log_filter: LogFilter, question: str) -> str:
    conditions = sorted(repr(c) for c in log_filter.metadata_conditions)
    filters = sorted((name, repr(value)) for name, value in log_filter.active_filters().items())
    scope = [CACHE_VERSION, workspace.pk, workspace.created_at.timestamp(), data_generation(workspace.pk)]
    raw = orjson.dumps([scope, question, conditions, filters])
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _cached(
    workspace: Workspace,
    window: Window,
    log_filter: LogFilter,
    question: str,
    compute: Callable[[Window], dict[tuple, Metrics]],
) -> dict[tuple, Metrics]:
    """``compute`` over ``window``, as the merge of its pieces, closed ones through the cache."""
    stable = timezone.now().replace(minute=0, second=0, microsecond=0) - STABLE_AFTER
    pieces, opened = _pieces(window, stable)
    signature = _signature(workspace, log_filter, question)
    keys = {piece: f"portico:filtered:{signature}:{piece[0]:%Y%m%d%H}-{piece[1]:%Y%m%d%H}" for piece in pieces}
    try:
        found = cache.get_many(list(keys.values()))
    except Exception:  # a cache outage only costs speed
        logger.warning("filtered analytics cache unavailable", exc_info=True)
        found = {}
    parts: list[dict] = []
    fresh = {}
    for piece in pieces:
        packed = found.get(keys[piece])
        if packed is None:
            cells = compute(Window(piece[0], piece[1], ""))
            packed = fresh[keys[piece]] = {group: cell.pack() for group, cell in cells.items()}
        parts.append(packed)
    if fresh:
        try:
            cache.set_many(fresh, timeout=CLOSED_DAY_TTL)
        except Exception:
            logger.warning("filtered analytics cache unavailable", exc_info=True)
    if opened is not None:
        parts.append(compute(Window(opened[0], opened[1], "")))
    return merge_cells(parts)


def hourly(workspace: Workspace, window: Window, log_filter: LogFilter, *, hist: bool) -> dict[datetime, Metrics]:
    """Filtered totals per hour of the window."""

    def compute(piece: Window) -> dict[tuple, Metrics]:
        source = _source(workspace, piece, log_filter, None)
        cells = aggregate(source, {"t": source.bucket_expr("hour")}, with_histograms=hist)
        return {(aware(group[0]),): totals for group, totals in cells.items() if totals.requests}

    cells = _cached(workspace, window, log_filter, f"hourly:{hist}", compute)
    return {group[0]: cell for group, cell in cells.items()}


def total(workspace: Workspace, window: Window, log_filter: LogFilter, *, hist: bool) -> Metrics:
    result = Metrics()
    for cell in hourly(workspace, window, log_filter, hist=hist).values():
        result.add(cell)
    return result


def unique_users(workspace: Workspace, window: Window, log_filter: LogFilter) -> int:
    """Distinct users under the filter. A count does not add up across pieces, but the set of
    users does: this counts the values of the per-user groups (cached by piece, shared with the
    Users page), so a warm window reads only its open end. Values the rollups folded into
    "(other)" are not counted, as on unfiltered pages (a rollup answers a user grouping under a
    filter only for a ``user=`` filter on hours without overflow)."""
    return sum(1 for (value,) in groups(workspace, window, log_filter, "user", hist=False) if value != OTHER)


def groups(workspace: Workspace, window: Window, log_filter: LogFilter, dimension: str, *, hist: bool) -> dict:
    """{value: Metrics} for every value of ``dimension`` (the dashboard's group names) among the
    filtered logs that carry it."""
    grouping = Grouping.parse(dimension)

    def compute(piece: Window) -> dict[tuple, Metrics]:
        source = _source(workspace, piece, log_filter, grouping)
        cells = aggregate(source, {"g": source.group_expr(grouping)}, with_histograms=hist)
        return {group: totals for group, totals in cells.items() if totals.requests}

    return _cached(workspace, window, log_filter, f"groups:{dimension}:{hist}", compute)


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


def dimension_cells(workspace: Workspace, window: Window, log_filter: LogFilter) -> dict[tuple, Metrics]:
    """What the Errors page's tables read: cells per (provider, model, api key, status class,
    status code), from DimensionRollup or the logs (a metadata filter is never rolled up with
    these dimensions)."""

    def compute(piece: Window) -> dict[tuple, Metrics]:
        source = _source(workspace, piece, log_filter, Grouping("model"))
        keys = {f"d_{name}": expr for name, expr in _dimension_exprs(source).items()}
        return {group: totals for group, totals in aggregate(source, keys).items() if totals.requests}

    return _cached(workspace, window, log_filter, "dimensions", compute)


def group_series(workspace: Workspace, window: Window, log_filter: LogFilter, dimension: str) -> dict[tuple, Metrics]:
    """{(value, chart bucket): Metrics} of the filtered logs (the Summary chart)."""
    grouping = Grouping.parse(dimension)
    step = window.step  # the whole window's chart step, not a piece's

    def compute(piece: Window) -> dict[tuple, Metrics]:
        source = _source(workspace, piece, log_filter, grouping)
        keys = {"g": source.group_expr(grouping), "t": source.bucket_expr(step)}
        return {(g, aware(t)): totals for (g, t), totals in aggregate(source, keys).items()}

    return _cached(workspace, window, log_filter, f"series:{dimension}:{step}", compute)
