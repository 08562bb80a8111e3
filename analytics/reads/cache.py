"""The read engine's one closed-period cache: every dashboard aggregate, filtered or not.

A page asks ``read(workspace, start, end, Question(...), log_filter)``. The answer is computed by
one code path (``compute``): analytics.reads.engine.choose_source picks the source that answers
exactly (DimensionRollup, MetadataRollup, PairRollup when complete for the piece of the window
asked (analytics.reads.pairs), or the raw logs when a filter is not a rolled-up dimension), and
the engine aggregates it; rollup histograms are merged inside the database, raw
logs are read once for sums and histograms together (``log_cells_one_pass``).

Hours that ended more than STABLE_AFTER ago no longer change: logs reach the database within
seconds, so only a late batch (a spool replayed long after an outage), a rebuild or retention
can touch them; those bump the workspace's data generation (``note_changed``), which is part of
every cache key with the workspace, the filter and the question, so the next view reads the new
numbers. A window is cut into its closed hours before its first whole UTC day, its closed whole
days and the closed hours after them (all kept in Django's cache: Redis in production, per
process in the embedded mode; per day, per run of days a window covers, and by exact range for
the hours outside whole days), and its last STABLE_AFTER hours, read live. Entries expire after
CLOSED_DAY_TTL regardless. The merged closed part of a window is also kept in this process
(``_MEMO``). Distinct counts do not add up across pieces: readers count the values of groups.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from django.core.cache import cache
from django.db.models import F, TextField
from django.db.models.expressions import Combinable
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Trunc
from django.utils import timezone

from analytics.filters import LogFilter
from analytics.reads.engine import (
    DIMENSION_COLUMNS,
    Grouping,
    Source,
    aggregate,
    choose_source,
    dimension_expr,
    log_cells_one_pass,
    merged_in_database,
    metadata_pairs_source,
)
from analytics.reads.metrics import Metrics, aware
from workspaces.models import Workspace

logger = logging.getLogger(__name__)

STABLE_AFTER = timedelta(hours=2)
CLOSED_DAY_TTL = 10 * 60
DAY = timedelta(days=1)
CACHE_VERSION = 6  # 6: one cache for filtered and unfiltered reads


# --- What is asked -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    """What a page asks of a window: cells per ``columns`` (empty: one total).

    Columns: "group" (the value of ``grouping``: model, provider, api_key, user or
    metadata.<key>), "hour" or "day" (the time bucket), DimensionRollup's columns (provider,
    model, api_key_id, status_class, status_code) or "key" and "value" (every metadata pair;
    no filter). ``grouping`` also steers the source (a grouping the rollups do not carry with
    the filter is read from the logs); ``values`` keeps only these group values.
    """

    columns: tuple[str, ...] = ()
    grouping: str | None = None
    values: tuple = ()
    hist: bool = False

    @property
    def all_pairs(self) -> bool:
        return "key" in self.columns


def is_filtered(log_filter: LogFilter | None) -> bool:
    """Whether ``log_filter`` narrows the logs beyond the window."""
    return bool(log_filter is not None and (log_filter.active_filters() or log_filter.metadata_conditions))


# --- The one code path to the database ---------------------------------------------------


def _source(workspace: Workspace, start: datetime, end: datetime, question: Question, log_filter) -> Source:
    if question.all_pairs:
        if log_filter is not None:
            raise ValueError("Every metadata pair is read unfiltered only.")
        return metadata_pairs_source(workspace, (start, end))
    grouping = Grouping.parse(question.grouping) if question.grouping else None
    return choose_source(workspace=workspace, log_filter=log_filter, window=(start, end), grouping=grouping)


def source_name(
    workspace: Workspace, start: datetime, end: datetime, question: Question, log_filter: LogFilter | None = None
) -> str:
    """The source ``read`` answers ``question`` over [start, end) from ("rollups" or "logs"),
    without reading it (REST answers name it)."""
    log_filter = log_filter if is_filtered(log_filter) else None
    return _source(workspace, start, end, question, log_filter).name


def _expr(source: Source, question: Question, column: str) -> Combinable:
    if column == "group":
        return source.group_expr(Grouping.parse(question.grouping))
    if column in ("hour", "day"):
        return source.bucket_expr(column)
    if column in DIMENSION_COLUMNS:
        return dimension_expr(source, column)
    if column in ("key", "value"):
        return F(column)
    raise ValueError(f"Unknown column {column!r}.")


def compute(
    workspace: Workspace,
    start: datetime,
    end: datetime,
    question: Question,
    log_filter: LogFilter | None = None,
    *,
    by_day: bool = False,
) -> dict[tuple, Metrics]:
    """``question`` over [start, end) from the database, no cache (``by_day``: the UTC day
    first in every group)."""
    source = _source(workspace, start, end, question, log_filter)
    keys = {f"c{i}": _expr(source, question, column) for i, column in enumerate(question.columns)}
    if question.values:
        first = keys["c0"]
        # A JSON key's text compared as text (an `in` lookup on the JSON transform itself
        # would compare JSON values on SQLite).
        first = Cast(first, TextField()) if isinstance(first, KeyTextTransform) else first
        source.queryset = source.queryset.annotate(c_values=first).filter(c_values__in=question.values)
    if by_day:
        keys = {"c_day": Trunc(source.time_field, "day", tzinfo=UTC), **keys}
    if source.is_rollup and question.hist:
        cells, hists = aggregate(source, keys), {}
        if any(cell.requests for cell in cells.values()):  # no rows: no histogram query
            hists = {tuple(aware(g) for g in group): h for group, h in merged_in_database(source, keys).items()}
    elif question.hist:
        cells, hists = log_cells_one_pass(source, keys), {}
    else:
        cells, hists = aggregate(source, keys), {}
    result = {}
    for group, cell in cells.items():
        if cell.requests:
            group = tuple(aware(g) for g in group)
            cell.hist = hists.get(group, cell.hist)
            result[group] = cell
    return result


# --- Data generations --------------------------------------------------------------------


def _generation_key(workspace_id: int) -> str:
    return f"portico:dash:generation:{workspace_id}"


def data_generation(workspace_id: int) -> int:
    """A number that changes whenever closed hours of the workspace change."""
    try:
        return cache.get(_generation_key(workspace_id), 0)
    except Exception:
        return -1


def note_changed(workspace_ids: Iterable[int]) -> None:
    """Closed hours of these workspaces changed (late logs, rebuild, retention): cached cells
    made before are not used again. Never raises: the data is written already, and without the
    cache the worst case is CLOSED_DAY_TTL of stale totals."""
    for workspace_id in set(workspace_ids):
        key = _generation_key(workspace_id)
        try:
            try:
                cache.incr(key)
            except ValueError:  # not set yet (or expired)
                cache.set(key, int(time.time() * 1000), timeout=None)
        except Exception:
            logger.warning("Could not mark workspace %s's dashboard cache stale", workspace_id, exc_info=True)


def is_closed(moment: datetime, now: datetime | None = None) -> bool:
    """Whether ``moment``'s hour is cached as closed by now."""
    return moment < (now or timezone.now()).replace(minute=0, second=0, microsecond=0) - STABLE_AFTER


def _signature(workspace: Workspace, question: Question, log_filter: LogFilter | None) -> str:
    filtered = is_filtered(log_filter)
    conditions = sorted(repr(c) for c in log_filter.metadata_conditions) if filtered else []
    filters = sorted((name, repr(value)) for name, value in log_filter.active_filters().items()) if filtered else []
    scope = [CACHE_VERSION, workspace.pk, workspace.created_at.timestamp(), data_generation(workspace.pk)]
    raw = orjson.dumps([scope, repr(question), conditions, filters])
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


# --- Reading a window --------------------------------------------------------------------


def merge_cells(parts: list[dict[tuple, Metrics | tuple]], key=None) -> dict[tuple, Metrics]:
    """Sum cells (or packed cells) with the same group, after ``key`` maps a group to a
    coarser one. The inputs are never modified."""
    merged: dict[tuple, Metrics] = {}
    for part in parts:
        for group, cell in part.items():
            target = key(group) if key else group
            if isinstance(cell, tuple):
                if target in merged:
                    merged[target].add_packed(cell)
                else:
                    merged[target] = Metrics.unpack(cell)
                continue
            if target not in merged:
                merged[target] = Metrics()
            merged[target].add(cell)
    return merged


def _days(start: datetime, end: datetime) -> list[datetime]:
    """Whole UTC days inside [start, end)."""
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < start:
        first += DAY
    days = []
    while first + DAY <= end:
        days.append(first)
        first += DAY
    return days


@dataclass(frozen=True, slots=True)
class _Ask:
    """One read: who asks what, under which filter, and its cache signature."""

    workspace: Workspace
    question: Question
    log_filter: LogFilter | None
    signature: str

    def compute(self, start: datetime, end: datetime, *, by_day: bool = False) -> dict[tuple, Metrics]:
        return compute(self.workspace, start, end, self.question, self.log_filter, by_day=by_day)


def read(
    workspace: Workspace,
    start: datetime,
    end: datetime,
    question: Question,
    log_filter: LogFilter | None = None,
    *,
    now: datetime | None = None,
) -> dict[tuple, Metrics]:
    """Cells of ``question`` over [start, end) under ``log_filter``: the closed part through
    the caches, the last STABLE_AFTER hours live. Each call returns fresh Metrics."""
    log_filter = log_filter if is_filtered(log_filter) else None
    ask = _Ask(workspace, question, log_filter, _signature(workspace, question, log_filter))
    stable = (now or timezone.now()).replace(minute=0, second=0, microsecond=0) - STABLE_AFTER
    closed_end = min(end, stable)
    if closed_end <= start:
        return ask.compute(start, end)
    days = _days(start, closed_end)
    # Closed hours outside whole days (the window's first partial day, the hours between the
    # last closed midnight and `stable`) are cached by their exact range: such a range moves
    # with the window once an hour.
    closed_ranges = [(start, days[0]), (days[-1] + DAY, closed_end)] if days else [(start, closed_end)]
    closed_ranges = [(low, high) for low, high in closed_ranges if low < high]
    memo_key = (ask.signature, tuple(closed_ranges), (days[0], days[-1]) if days else None)
    closed = _memo_get(memo_key)
    if closed is None:
        parts = [_cached_hours(ask, low, high) for low, high in closed_ranges]
        if days:
            parts.append(_closed_range(ask, days))
        closed = merge_cells(parts)
        _memo_put(memo_key, closed)
    if closed_end >= end:
        return closed
    result = closed
    for group, cell in ask.compute(closed_end, end).items():
        base = closed.get(group)
        if base is not None:
            cell.add(base)
        result[group] = cell
    return result


def _cache_get_many(keys: list[str]) -> dict:
    try:
        return cache.get_many(keys)
    except Exception:  # a cache outage only costs speed
        logger.warning("dashboard cache unavailable", exc_info=True)
        return {}


def _cache_set_many(values: dict) -> None:
    try:
        cache.set_many(values, timeout=CLOSED_DAY_TTL)
    except Exception:
        logger.warning("dashboard cache unavailable", exc_info=True)


def _cached_hours(ask: _Ask, start: datetime, end: datetime) -> dict:
    key = f"portico:dash:{ask.signature}:{start:%Y%m%d%H}-{end:%Y%m%d%H}"
    packed = _cache_get_many([key]).get(key)
    if packed is None:
        packed = {group: cell.pack() for group, cell in ask.compute(start, end).items()}
        _cache_set_many({key: packed})
    return packed


def _closed_range(ask: _Ask, days: list[datetime]) -> dict:
    """The packed cells of ``days`` merged. A window keeps the same closed days until the next
    day closes, so the merged range is cached as well; a new range is merged from the cached
    days and only the newly closed day is read from the database."""
    key = f"portico:dash:{ask.signature}:{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}"
    merged = _cache_get_many([key]).get(key)
    if merged is None:
        cells = merge_cells(_closed_days(ask, days))
        merged = {group: cell.pack() for group, cell in cells.items()}
        _cache_set_many({key: merged})
    return merged


def _closed_days(ask: _Ask, days: list[datetime]) -> list[dict]:
    keys = {day: f"portico:dash:{ask.signature}:{day:%Y%m%d}" for day in days}
    found = _cache_get_many(list(keys.values()))
    missing = [day for day in days if keys[day] not in found]
    if missing:
        # One grouped query for the span of missing days (not one per day).
        fresh: dict[datetime, dict] = {day: {} for day in missing}
        for (day, *group), cell in ask.compute(missing[0], missing[-1] + DAY, by_day=True).items():
            if day in fresh:
                fresh[day][tuple(group)] = cell.pack()
        to_store = {keys[day]: fresh[day] for day in missing}
        _cache_set_many(to_store)
        found.update(to_store)
    return [found[keys[day]] for day in days]


# The closed part of a window, merged, kept in this process too: reading tens of thousands of
# cells back from the shared cache (unpickling) on every view cost more than the rest of a page.
# Keyed like the shared cache (signature with the workspace's data generation, ranges), bounded
# by the number of cells held.
#
# Held packed: a dict of plain tuples of ints, floats, Decimals, datetimes, None and histograms
# as tuples of (str, int) pairs (a dict inside would keep its tuple tracked). The cyclic garbage
# collector stops tracking such tuples and dicts after the collections they survive (CPython
# untracks exact tuples and dicts that hold only untracked objects), so long-lived cells cost
# full collections nothing, without ``gc.freeze()``: freezing at request time made every object
# alive at that moment (the page's own garbage in cycles included) immortal, and RSS grew with
# the number of windows viewed (bench/bench_dashboard_memory.py). Each read builds fresh Metrics,
# so a caller that changes one cannot leak into the next view.
_MEMO: OrderedDict[tuple, dict[tuple, tuple]] = OrderedDict()
_MEMO_LOCK = threading.Lock()
MEMO_MAX_CELLS = 100_000


def _memo_get(key: tuple) -> dict[tuple, Metrics] | None:
    with _MEMO_LOCK:
        found = _MEMO.get(key)
        if found is not None:
            _MEMO.move_to_end(key)
    if found is None:
        return None
    # Fields are stored in Metrics' order, cost and last_seen as their own (untracked) objects:
    # rebuilding a cell is then one constructor call, a few times cheaper than Metrics.unpack.
    return {
        group: Metrics(*fields[:7], dict(fields[7]) if fields[7] else {}, *fields[8:])
        for group, fields in found.items()
    }


def _memo_put(key: tuple, cells: dict[tuple, Metrics]) -> None:
    if len(cells) > MEMO_MAX_CELLS:
        return
    packed = {
        group: (
            cell.requests,
            cell.errors,
            cell.cost,
            cell.prompt_tokens,
            cell.completion_tokens,
            cell.latency_sum_ms,
            cell.last_seen,
            tuple(cell.hist.items()),
            cell.cached_prompt_tokens,
            cell.reasoning_tokens,
            cell.unpriced_requests,
            cell.cache_write_tokens,
            cell.audio_prompt_tokens,
            cell.audio_completion_tokens,
            cell.priced_requests,
        )
        for group, cell in cells.items()
    }
    with _MEMO_LOCK:
        _MEMO[key] = packed
        held = sum(len(value) for value in _MEMO.values())
        while held > MEMO_MAX_CELLS:
            _old_key, dropped = _MEMO.popitem(last=False)
            held -= len(dropped)


def clear_memo() -> None:
    with _MEMO_LOCK:
        _MEMO.clear()
