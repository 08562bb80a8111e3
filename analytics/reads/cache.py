"""Merged rollup cells for the dashboard, with closed hours cached.

A dashboard page sums hourly rollup rows over its window and merges their latency histograms.
Summing is cheap; merging histograms is not (every row's JSON object is expanded in the
database), and a 30-day window with its previous window touches tens of thousands of rows.

Rollup hours that ended more than STABLE_AFTER ago no longer change: logs reach the rollups
within seconds, so only a late batch (a spool replayed long after an outage), a rebuild or
retention can touch them; those bump the workspace's data generation (``note_changed``), which
is part of every cache key, so the next page view reads the new numbers.
Their merged cells are kept in Django's cache (Redis in production, per process in the
embedded mode): per whole UTC day, per run of whole days a window covers, and by exact range
for the closed hours outside whole days. A page merges those in Python and reads only the last
STABLE_AFTER hours live. Entries expire after CLOSED_DAY_TTL regardless.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db import connection
from django.db.models import Max, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from analytics.reads.metrics import Metrics, aware

logger = logging.getLogger(__name__)

STABLE_AFTER = timedelta(hours=2)
CLOSED_DAY_TTL = 10 * 60
DAY = timedelta(days=1)
CACHE_VERSION = 5  # 3: cached/reasoning tokens, unpriced requests; 4: cache-write, audio; 5: priced requests


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


_SUMS = {
    "requests": Sum("requests"),
    "errors": Sum("errors"),
    "cost": Sum("cost"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cached_prompt_tokens": Sum("cached_prompt_tokens"),
    "reasoning_tokens": Sum("reasoning_tokens"),
    "cache_write_tokens": Sum("cache_write_tokens"),
    "audio_prompt_tokens": Sum("audio_prompt_tokens"),
    "audio_completion_tokens": Sum("audio_completion_tokens"),
    "unpriced_requests": Sum("unpriced_requests"),
    "latency_sum_ms": Sum("latency_sum_ms"),
    "priced_requests": Sum("priced_requests"),
    "last_seen": Max("last_seen"),
}


def _query(qs: QuerySet, fields: list[str], *, hist: bool) -> dict[tuple, Metrics]:
    """Cells of ``qs`` grouped by ``fields`` (two queries with histograms, one without)."""
    cells: dict[tuple, Metrics] = {}
    rows = qs.values(*fields).annotate(**_SUMS).order_by() if fields else [qs.aggregate(**_SUMS)]
    for row in rows:
        if not row["requests"]:
            continue
        cells[tuple(aware(row[name]) for name in fields)] = Metrics(
            requests=row["requests"],
            errors=row["errors"] or 0,
            cost=Decimal(row["cost"] or 0),
            prompt_tokens=row["prompt_tokens"] or 0,
            completion_tokens=row["completion_tokens"] or 0,
            cached_prompt_tokens=row["cached_prompt_tokens"] or 0,
            reasoning_tokens=row["reasoning_tokens"] or 0,
            cache_write_tokens=row["cache_write_tokens"] or 0,
            audio_prompt_tokens=row["audio_prompt_tokens"] or 0,
            audio_completion_tokens=row["audio_completion_tokens"] or 0,
            unpriced_requests=row["unpriced_requests"] or 0,
            latency_sum_ms=float(row["latency_sum_ms"] or 0),
            priced_requests=row["priced_requests"] or 0,
            last_seen=aware(row["last_seen"]),
        )
    if hist and cells:
        for group, merged in merged_histograms(qs, fields).items():
            if group in cells:
                cells[group].hist = merged
    return cells


def merged_histograms(qs: QuerySet, fields: list[str]) -> dict[tuple, dict[str, int]]:
    """{group: merged latency histogram}, merged inside the database."""
    inner_sql, params = qs.values(*fields, "latency_hist").query.sql_with_params()
    quote = connection.ops.quote_name
    cols = ", ".join(f"s.{quote(name)}" for name in fields)
    if connection.vendor == "postgresql":
        each, count = "jsonb_each_text(s.latency_hist) h", "h.value::bigint"
    else:
        each, count = "json_each(s.latency_hist) h", "h.value"
    select = f"{cols}, " if cols else ""
    sql = f"SELECT {select}h.key, SUM({count}) FROM ({inner_sql}) s, {each} GROUP BY {select}h.key"  # noqa: S608
    merged: dict[tuple, dict[str, int]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            *group, key, total = row
            merged[tuple(aware(g) for g in group)][str(key)] = int(total)
    return merged


def _days(start: datetime, end: datetime, stable: datetime) -> list[datetime]:
    """Whole UTC days inside [start, end) that closed before ``stable``."""
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < start:
        first += DAY
    days = []
    while first + DAY <= min(end, stable):
        days.append(first)
        first += DAY
    return days


def _generation_key(workspace_id: int) -> str:
    return f"portico:dash:generation:{workspace_id}"


def data_generation(workspace_id: int) -> int:
    """A number that changes whenever closed rollup hours of the workspace change."""
    try:
        return cache.get(_generation_key(workspace_id), 0)
    except Exception:
        return -1


def note_changed(workspace_ids: Iterable[int]) -> None:
    """Closed rollup hours of these workspaces changed (late logs, rebuild, retention): cached
    cells made before are not used again. Never raises: the data is written already, and
    without the cache the worst case is CLOSED_DAY_TTL of stale totals."""
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
    """Whether ``moment``'s rollup hour is cached as closed by now."""
    return moment < (now or timezone.now()).replace(minute=0, second=0, microsecond=0) - STABLE_AFTER


def _signature(qs: QuerySet, fields: list[str], hist: bool, scope: str) -> str:
    text = f"{CACHE_VERSION}|{scope}|{qs.query}|{','.join(fields)}|{hist}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def rollup_cells(
    qs: QuerySet,
    fields: list[str],
    start: datetime,
    end: datetime,
    *,
    hist: bool,
    scope: str,
    now: datetime | None = None,
) -> dict[tuple, Metrics]:
    """Cells of rollup rows ``qs`` (not yet limited in time) over [start, end), grouped by
    ``fields``. ``scope`` names what ``qs`` belongs to (workspace id and creation time), so
    cache entries never outlive or cross workspaces."""
    stable = (now or timezone.now()).replace(minute=0, second=0, microsecond=0) - STABLE_AFTER
    closed_end = min(end, stable)
    if closed_end <= start:
        return _query(qs.filter(bucket__gte=start, bucket__lt=end), fields, hist=hist)
    days = _days(start, closed_end, stable)
    # Closed hours outside whole days (the window's first partial day, the hours between the
    # last closed midnight and `stable`) are cached by their exact range: such a range moves
    # with the window once an hour.
    closed_ranges = [(start, days[0]), (days[-1] + DAY, closed_end)] if days else [(start, closed_end)]
    closed_ranges = [(low, high) for low, high in closed_ranges if low < high]
    signature = _signature(qs, fields, hist, scope)
    memo_key = (signature, tuple(closed_ranges), (days[0], days[-1]) if days else None)
    closed = _memo_get(memo_key)
    if closed is None:
        parts = [_cached_hours(qs, fields, low, high, hist=hist, scope=scope) for low, high in closed_ranges]
        if days:
            parts.append(_closed_range(qs, fields, days, hist=hist, scope=scope))
        closed = merge_cells(parts)
        _memo_put(memo_key, closed)
    if closed_end >= end:
        return dict(closed)
    result = dict(closed)
    for group, cell in _query(qs.filter(bucket__gte=closed_end, bucket__lt=end), fields, hist=hist).items():
        base = closed.get(group)
        if base is not None:
            cell.add(base)  # the fresh cell is ours; the memoised one stays as it is
        result[group] = cell
    return result


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


def _cached_hours(qs: QuerySet, fields: list[str], start: datetime, end: datetime, *, hist: bool, scope: str) -> dict:
    key = f"portico:dash:{_signature(qs, fields, hist, scope)}:{start:%Y%m%d%H}-{end:%Y%m%d%H}"
    packed = cache.get(key)
    if packed is None:
        cells = _query(qs.filter(bucket__gte=start, bucket__lt=end), fields, hist=hist)
        packed = {group: cell.pack() for group, cell in cells.items()}
        cache.set(key, packed, timeout=CLOSED_DAY_TTL)
    return packed


def _closed_range(qs: QuerySet, fields: list[str], days: list[datetime], *, hist: bool, scope: str) -> dict:
    """The packed cells of ``days`` merged. A window keeps the same closed days until the next
    day closes, so the merged range is cached as well; a new range is merged from the cached
    days and only the newly closed day is read from the database."""
    key = f"portico:dash:{_signature(qs, fields, hist, scope)}:{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}"
    merged = cache.get(key)
    if merged is None:
        cells = merge_cells(_closed_days(qs, fields, days, hist=hist, scope=scope))
        merged = {group: cell.pack() for group, cell in cells.items()}
        cache.set(key, merged, timeout=CLOSED_DAY_TTL)
    return merged


def _closed_days(qs: QuerySet, fields: list[str], days: list[datetime], *, hist: bool, scope: str) -> list[dict]:
    signature = _signature(qs, fields, hist, scope)
    keys = {day: f"portico:dash:{signature}:{day:%Y%m%d}" for day in days}
    found = cache.get_many(list(keys.values()))
    missing = [day for day in days if keys[day] not in found]
    if missing:
        fresh = _query_days(qs, fields, missing[0], missing[-1] + DAY, hist=hist)
        to_store = {keys[day]: {g: c.pack() for g, c in fresh.get(day, {}).items()} for day in missing}
        cache.set_many(to_store, timeout=CLOSED_DAY_TTL)
        found.update(to_store)
    return [found[keys[day]] for day in days]


def _query_days(qs: QuerySet, fields: list[str], start: datetime, end: datetime, *, hist: bool) -> dict:
    """{day: cells} for every day in [start, end), in one grouped query."""
    per_day = qs.filter(bucket__gte=start, bucket__lt=end).annotate(portico_day=TruncDay("bucket", tzinfo=UTC))
    cells = _query(per_day, ["portico_day", *fields], hist=hist)
    result: dict[datetime, dict[tuple, Metrics]] = defaultdict(dict)
    for (day, *group), cell in cells.items():
        result[aware(day)][tuple(group)] = cell
    return result
