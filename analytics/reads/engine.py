"""Aggregating requests over an hour-aligned window, from the hourly rollups when they can
answer exactly and from the raw logs otherwise (see analytics/reports.py for the rules).

``choose_source`` picks the source; ``aggregate`` sums the additive metrics per combination of
group expressions (time bucket, group value) and ``histograms`` merges latency histograms the
same way. Both sources yield the same numbers: rollup histograms are merged inside the database
(jsonb_each_text / json_each), raw logs are bucketed with analytics.histogram's formula in SQL.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from django.core.cache import cache
from django.db import connection
from django.db.models import Case, Count, F, FloatField, Max, Q, QuerySet, Sum, TextField, Value, When
from django.db.models.expressions import Combinable
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, Floor, Least, Ln, Trunc

from analytics import histogram
from analytics.filters import LogFilter
from analytics.models import TOKEN_PARTS, DimensionRollup, MetadataRollup, RequestLog
from analytics.reads.metrics import Metrics
from analytics.reads.pairs import complete_pairs, has_overflow
from workspaces.models import Workspace

logger = logging.getLogger(__name__)

OTHER = MetadataRollup.OTHER_VALUE
HIST_CACHE_SECONDS = 7 * 24 * 3600
USER_KEY = "_user"
# Filters DimensionRollup carries (LogFilter names).
DIMENSION_FILTERS = frozenset({"provider", "model", "api_key", "api_key_ids", "success", "ai_org_model"})
SUCCESS_CLASSES = (2, 3)  # success = 200 <= status < 400


class ReportError(ValueError):
    """A request the report cannot answer; ``param`` names the parameter to fix."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


# --- What to group by --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grouping:
    """A dimension: ``kind`` is metadata (with ``key``), user, model, provider or api_key."""

    kind: str
    key: str = ""

    @classmethod
    def parse(cls, text: str, param: str = "group_by") -> Grouping:
        if text.startswith("metadata."):
            key = text[len("metadata.") :]
            if not key or "\x00" in key or len(key) > 128:
                raise ReportError(param, "Name a metadata key: metadata.<key>.")
            return cls("user") if key == USER_KEY else cls("metadata", key)
        if text in ("user", "model", "provider", "api_key"):
            return cls(text)
        raise ReportError(param, "Use metadata.<key>, user, model, provider or api_key.")

    @property
    def text(self) -> str:
        """What ``parse`` reads back: the spelling the closed-period cache keys a question by."""
        return f"metadata.{self.key}" if self.kind == "metadata" else self.kind

    @property
    def metadata_key(self) -> str | None:
        return self.key if self.kind == "metadata" else USER_KEY if self.kind == "user" else None


# --- Sources -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pair:
    """One metadata key with the values it must equal (one of)."""

    key: str
    values: tuple[str, ...]


@dataclass
class Source:
    """A queryset over RollupMetrics rows or RequestLog rows, plus how to read each."""

    name: str  # "rollups" (any rollup table) or "logs"
    queryset: QuerySet
    time_field: str
    group_expr: Callable[[Grouping], Combinable]
    sums: dict
    users_expr: Combinable | None = None
    # Identifies the rows the queryset selects, window aside (cache keys of rollup histograms).
    signature: str = ""

    @property
    def is_rollup(self) -> bool:
        return self.name == "rollups"

    def bucket_expr(self, interval: str) -> Combinable:
        if self.is_rollup and interval == "hour":
            return F(self.time_field)
        return Trunc(self.time_field, interval, tzinfo=UTC)


def _rollup_sums() -> dict:
    return {
        "m_requests": Sum("requests"),
        "m_errors": Sum("errors"),
        "m_prompt_tokens": Sum("prompt_tokens"),
        "m_completion_tokens": Sum("completion_tokens"),
        **{f"m_{name}": Sum(name) for name in TOKEN_PARTS},
        "m_cost": Sum("cost"),
        "m_priced_requests": Sum("priced_requests"),
        "m_unpriced_requests": Sum("unpriced_requests"),
        "m_latency_sum_ms": Sum("latency_sum_ms"),
        "m_last_seen": Max("last_seen"),
    }


def _log_sums() -> dict:
    return {
        "m_requests": Count("id"),
        "m_errors": Count("id", filter=Q(success=False)),
        "m_prompt_tokens": Sum("prompt_tokens"),
        "m_completion_tokens": Sum("completion_tokens"),
        **{f"m_{name}": Sum(name) for name in TOKEN_PARTS},
        "m_cost": Sum("cost"),
        "m_priced_requests": Count("cost"),
        "m_unpriced_requests": Count("id", filter=Q(cost__isnull=True, total_tokens__gt=0)),
        "m_latency_sum_ms": Sum("latency_ms"),
        "m_last_seen": Max("created_at"),
    }


def _dimension_source(workspace: Workspace, window: tuple, filters: dict) -> Source:
    qs = DimensionRollup.objects.filter(workspace=workspace, bucket__gte=window[0], bucket__lt=window[1])
    for name in ("provider", "model"):
        if filters.get(name):
            qs = qs.filter(**{f"{name}__in": filters[name]})
    for name in ("api_key", "api_key_ids"):
        if filters.get(name):
            qs = qs.filter(api_key_id__in=filters[name])
    if filters.get("success") is not None:
        in_success = Q(status_class__in=SUCCESS_CLASSES)
        qs = qs.filter(in_success if filters["success"] else ~in_success)
    if filters.get("ai_org_model"):
        pairs = Q()
        for item in filters["ai_org_model"]:
            provider, _, model = item.partition("__")
            pairs |= Q(provider=provider, model=model) if model else Q(provider=provider)
        qs = qs.filter(pairs)
    signature = f"dimension:{workspace.pk}:{sorted(filters.items())!r}"
    return Source(
        "rollups",
        qs,
        "bucket",
        lambda g: F(g.kind if g.kind != "api_key" else "api_key_id"),
        _rollup_sums(),
        signature=signature,
    )


def _metadata_source(workspace: Workspace, window: tuple, key: str | None, values: tuple[str, ...] = ()) -> Source:
    qs = MetadataRollup.objects.filter(workspace=workspace, bucket__gte=window[0], bucket__lt=window[1])
    if key is not None:
        qs = qs.filter(key=key)
    if values:
        qs = qs.filter(value__in=values)
    users = Count("value", distinct=True, filter=~Q(value=OTHER)) if key == USER_KEY else None
    signature = f"metadata:{workspace.pk}:{key}:{sorted(values)!r}"
    return Source("rollups", qs, "bucket", lambda g: F("value"), _rollup_sums(), users, signature)


def _pair_source(workspace: Workspace, window: tuple, pair: Pair, group_key: str) -> Source | None:
    """PairRollup's rows of ``pair`` grouped by ``group_key``, when complete (analytics.reads.pairs)."""
    qs = complete_pairs(workspace, window, pair.key, pair.values, group_key)
    if qs is None:
        return None
    signature = f"pair:{workspace.pk}:{pair.key}:{sorted(pair.values)!r}:{group_key}"
    return Source("rollups", qs, "bucket", lambda g: F("value_b"), _rollup_sums(), signature=signature)


def _log_group_expr(grouping: Grouping) -> Combinable:
    if grouping.kind == "metadata":
        return KeyTextTransform(grouping.key, "metadata")
    if grouping.kind == "api_key":
        return Coalesce("api_key_id", 0)
    return F(grouping.kind)


def metadata_pairs_source(workspace: Workspace, window: tuple) -> Source:
    """Every (key, value) row of MetadataRollup (the metadata key report; unfiltered only)."""
    return _metadata_source(workspace, window, None)


def log_source(workspace: Workspace, window: tuple, log_filter: LogFilter | None, grouping: Grouping | None) -> Source:
    qs = RequestLog.objects.filter(workspace=workspace)
    if log_filter is not None:
        qs = log_filter.filter_outside_window(qs)
    qs = qs.filter(created_at__gte=window[0], created_at__lt=window[1])
    # Logs without the grouped key are left out, as the metadata rollups leave them out.
    if grouping is not None and grouping.kind == "metadata":
        qs = qs.filter(metadata__has_key=grouping.key)
    elif grouping is not None and grouping.kind == "user":
        qs = qs.exclude(user="")
    users = Count("user", distinct=True, filter=~Q(user=""))
    return Source("logs", qs, "created_at", _log_group_expr, _log_sums(), users)


def _metadata_pairs(log_filter: LogFilter | None) -> list[Pair] | None:
    """The metadata equalities asked for, or None when a metadata test rollups cannot answer."""
    if log_filter is None:
        return []
    pairs = []
    for condition in log_filter.metadata_conditions:
        if not condition.is_equality:
            return None
        pairs.append(Pair(condition.key, condition.values))
    if users := log_filter.active_filters().get("user"):
        pairs.append(Pair(USER_KEY, tuple(users)))
    return pairs


def choose_source(
    *,
    workspace: Workspace,
    log_filter: LogFilter | None,
    window: tuple,
    grouping: Grouping | None,
    users: bool = False,
) -> Source:
    """The rollup that answers this request exactly, else the raw logs (``log_filter`` None:
    no filter)."""
    filters = log_filter.active_filters() if log_filter is not None else {}
    dims = {name: value for name, value in filters.items() if name in DIMENSION_FILTERS}
    pairs = _metadata_pairs(log_filter)
    answerable = pairs is not None and not (set(filters) - DIMENSION_FILTERS - {"user"}) and len(pairs) <= 1
    pair = pairs[0] if answerable and pairs else None
    if answerable and not (pair and dims):
        group_key = grouping.metadata_key if grouping else None
        if pair and has_overflow(workspace, window, pair.key):
            pass
        elif grouping is not None and group_key is not None:
            if not dims and not users and (pair is None or pair.key == group_key):
                return _metadata_source(workspace, window, group_key, pair.values if pair else ())
            if not dims and not users and (source := _pair_source(workspace, window, pair, group_key)):
                return source
        elif grouping is not None:
            if pair is None and not users:
                return _dimension_source(workspace, window, dims)
        elif users:
            # Users folded into OTHER by the rollups' per-hour cap cannot be told apart.
            if not dims and (pair is None or pair.key == USER_KEY) and not has_overflow(workspace, window, USER_KEY):
                return _metadata_source(workspace, window, USER_KEY, pair.values if pair else ())
        elif pair is not None:
            return _metadata_source(workspace, window, pair.key, pair.values)
        else:
            return _dimension_source(workspace, window, dims)
    return log_source(workspace, window, log_filter, grouping)


# DimensionRollup's columns, as each source spells them (the Errors page's breakdowns).
DIMENSION_COLUMNS = ("provider", "model", "api_key_id", "status_class", "status_code")


def dimension_expr(source: Source, name: str) -> Combinable:
    """One of DIMENSION_COLUMNS over ``source`` (a DimensionRollup or the logs)."""
    if source.is_rollup or name in ("provider", "model", "status_code"):
        return F(name)
    return Coalesce("api_key_id", 0) if name == "api_key_id" else F("status_code") / 100


# --- Aggregation -------------------------------------------------------------------------


def aggregate(
    source: Source, keys: dict[str, Combinable], *, users: bool = False, with_histograms: bool = False
) -> dict[tuple, Metrics]:
    """Metrics per combination of ``keys`` (name -> expression); () when keys is empty.
    ``with_histograms`` also fills each Metrics' latency histogram."""
    if with_histograms and source.is_rollup and not users:
        return _rollup_cells(source, keys)
    sums = dict(source.sums)
    if users:
        sums["m_users"] = source.users_expr
    qs = source.queryset.annotate(**keys).values(*keys) if keys else source.queryset
    rows = qs.annotate(**sums).order_by() if keys else [qs.aggregate(**sums)]
    result = {}
    for row in rows:
        totals = Metrics.from_row(row)
        if totals.requests or not keys:
            result[tuple(row[name] for name in keys)] = totals
    if with_histograms:
        for group, hist in histograms(source, keys).items():
            if group in result:
                result[group].hist = hist
    return result


def log_cells_one_pass(source: Source, keys: dict[str, Combinable]) -> dict[tuple, Metrics]:
    """Metrics with latency histograms per combination of ``keys``, from the raw logs in one
    scan: the sums are grouped by the keys and the latency bucket together, then folded here.
    (``aggregate`` reads the rows twice, once for the sums and once for the histograms; on a
    cold filtered page that second scan of millions of rows was half the time.)"""
    names = list(keys)
    rows = source.queryset.annotate(**keys, lb=_latency_bucket()).values(*names, "lb").annotate(**source.sums)
    result: dict[tuple, Metrics] = {}
    for row in rows.order_by():
        cell = Metrics.from_row(row)
        if not cell.requests:
            continue
        cell.hist = {str(int(row["lb"])): cell.requests}
        group = tuple(row[name] for name in names)
        if group in result:
            result[group].add(cell)
        else:
            result[group] = cell
    return result


_LOG_GROWTH = math.log(histogram.GROWTH)


def _latency_bucket() -> Combinable:
    """analytics.histogram.bucket_of in SQL, for histograms straight from raw logs."""
    index = Floor(Ln(F("latency_ms") / histogram.BASE_MS) / _LOG_GROWTH) + 1
    return Case(
        When(latency_ms__lt=histogram.BASE_MS, then=Value(0.0)),
        default=Least(Cast(index, FloatField()), Value(float(histogram.BUCKETS - 1))),
        output_field=FloatField(),
    )


def histograms(source: Source, keys: dict[str, Combinable]) -> dict[tuple, dict[str, int]]:
    """Merged latency histogram per combination of ``keys``."""
    names = list(keys)
    result: dict[tuple, dict[str, int]] = {}
    if not source.is_rollup:
        rows = (
            source.queryset.annotate(**keys, lb=_latency_bucket())
            .values(*names, "lb")
            .annotate(n=Count("id"))
            .order_by()
            .values_list(*names, "lb", "n")
        )
        for *group, bucket, count in rows:
            hist = result.setdefault(tuple(group), {})
            hist[str(int(bucket))] = hist.get(str(int(bucket)), 0) + count
        return result
    return _rollup_histograms(source, keys)


def merged_in_database(source: Source, keys: dict[str, Combinable]) -> dict[tuple, dict[str, int]]:
    """Merged latency histogram per combination of ``keys`` of a rollup source, merged by the
    database (jsonb_each_text / json_each): what the closed-period cache reads on a miss."""
    names = list(keys)
    inner_sql, params = source.queryset.annotate(**keys).values(*names, "latency_hist").query.sql_with_params()
    quote = connection.ops.quote_name
    cols = ", ".join(f"s.{quote(name)}" for name in names)
    if connection.vendor == "postgresql":
        each, count = "jsonb_each_text(s.latency_hist) h", "h.value::bigint"
    else:
        each, count = "json_each(s.latency_hist) h", "h.value"
    select = f"{cols}, " if cols else ""
    sql = f"SELECT {select}h.key, SUM({count}) FROM ({inner_sql}) s, {each} GROUP BY {select}h.key"  # noqa: S608
    merged: dict[tuple, dict[str, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for *group, key, total in cursor.fetchall():
            merged.setdefault(tuple(group), {})[str(key)] = int(total)
    return merged


def _rollup_histograms(source: Source, keys: dict[str, Combinable]) -> dict[tuple, dict[str, int]]:
    return {group: totals.hist for group, totals in _rollup_cells(source, keys).items()}


def _rollup_cells(source: Source, keys: dict[str, Combinable]) -> dict[tuple, Metrics]:
    """Metrics with merged histograms per ``keys``, from rollups, through a cache of day cells.

    Merging is the costly part of a percentile (30 days of hourly rows hold ~10^5-10^6 bucket
    counts). One query sums every (keys, UTC day) cell; each cell's histogram is cached under
    a fingerprint of its rows (requests, tokens, cost, last seen, row count), so an unchanged
    cell is merged once, and any new log, rebuild or retention changes its key. Cells of the
    running day are merged every time and not stored.
    """
    names = list(keys)
    cell_exprs = {**keys, "cell_day": Trunc(source.time_field, "day", tzinfo=UTC)}
    cells = list(
        source.queryset.annotate(**cell_exprs).values(*cell_exprs).annotate(**source.sums, f_rows=Count("*")).order_by()
    )
    by_key = {_cell_cache_key(source, cell, cell_exprs): cell for cell in cells}
    # A group's closed days merged are cached too, under the fingerprints of all its closed
    # cells: a month of day cells is then one cache read and no merging per group.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    closed_by_group: dict[tuple, list[str]] = {}
    for key, cell in by_key.items():
        if cell["cell_day"] < today:
            closed_by_group.setdefault(tuple(cell[n] for n in names), []).append(key)
    range_keys = {
        group: "portico:histrange:" + hashlib.blake2b("|".join(sorted(keys)).encode(), digest_size=16).hexdigest()
        for group, keys in closed_by_group.items()
        if len(keys) > 1
    }
    ranges = _cache_get_many(list(range_keys.values()))
    covered = {key for group, range_key in range_keys.items() if range_key in ranges for key in closed_by_group[group]}
    wanted = [key for key in by_key if key not in covered]
    found = _cache_get_many(wanted)
    missing = {key: by_key[key] for key in wanted if key not in found}
    if missing:
        found.update(_merge_cells(source, cell_exprs, missing))
    result: dict[tuple, Metrics] = {}
    for key, cell in by_key.items():
        totals = Metrics.from_row(cell)
        totals.hist = dict(found.get(key, {})) if key not in covered else {}
        group = tuple(cell[n] for n in names)
        if group in result:
            result[group].add(totals)
        else:
            result[group] = totals
    new_ranges = {}
    for group, range_key in range_keys.items():
        if range_key in ranges:
            histogram.merge(result[group].hist, ranges[range_key])
        else:
            new_ranges[range_key] = histogram.merge_all(found.get(key, {}) for key in closed_by_group[group])
    _cache_set_many(new_ranges)
    if not keys and () not in result:
        result[()] = Metrics()
    return result


def _cell_cache_key(source: Source, cell: dict, exprs: dict) -> str:
    raw = orjson.dumps(
        [
            source.signature,
            [str(cell[n]) for n in exprs],
            # Exact sums only: a float sum (latency) depends on the order the database adds the
            # rows in, which changes between plans, and made the key miss at random.
            cell["m_requests"],
            cell["m_prompt_tokens"],
            cell["m_completion_tokens"],
            str(cell["m_cost"]),
            str(cell["m_last_seen"]),
        ],
        default=str,
    )
    return f"portico:hist:{hashlib.blake2b(raw + str(cell['f_rows']).encode(), digest_size=16).hexdigest()}"


def _merge_cells(source: Source, exprs: dict, missing: dict[str, dict]) -> dict[str, dict[str, int]]:
    """Merge the rows of the ``missing`` cells (read only the days they cover); cache closed days."""
    days = sorted({cell["cell_day"] for cell in missing.values()})
    span = Q()
    for day in days:
        span |= Q(**{f"{source.time_field}__gte": day, f"{source.time_field}__lt": day + timedelta(days=1)})
    names = list(exprs)
    merged: dict[tuple, dict[str, int]] = {}
    rows = source.queryset.filter(span).annotate(**exprs).values_list(*names, Cast("latency_hist", TextField()))
    for *cell, text in rows.iterator(chunk_size=5000):
        hist = merged.setdefault(tuple(cell), {})
        for bucket, count in orjson.loads(text or "{}").items():
            hist[bucket] = hist.get(bucket, 0) + count
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    result, closed = {}, {}
    for key, cell in missing.items():
        result[key] = merged.get(tuple(cell[n] for n in names), {})
        if cell["cell_day"] < today:
            closed[key] = result[key]
    _cache_set_many(closed)
    return result


def _cache_get_many(keys: list[str]) -> dict:
    try:
        return cache.get_many(keys)
    except Exception:  # a cache outage only costs speed
        logger.warning("histogram cache unavailable", exc_info=True)
        return {}


def _cache_set_many(values: dict) -> None:
    if not values:
        return
    try:
        cache.set_many(values, HIST_CACHE_SECONDS)
    except Exception:
        logger.warning("histogram cache unavailable", exc_info=True)
