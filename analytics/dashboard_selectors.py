"""Aggregates the dashboard pages show, read from the hourly rollups (never a scan of raw logs
for totals): KPI tiles with the previous window, time series, group-by tables with p95,
error breakdowns and the metadata-key report.

Every aggregate, filtered or not, is read through ``analytics.reads.cache.read`` (the engine
chooses the source the REST analytics would for the same hour-aligned window, so both show the
same numbers; closed days are cached, so a 30-day page asks the database only about its open
edges). This module only shapes the cells into what pages show.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from analytics import histogram
from analytics.filters import LogFilter
from analytics.models import MetadataKey, MetadataKeySender, MetadataRollup
from analytics.reads.cache import Question, merge_cells, read
from analytics.reads.engine import DIMENSION_COLUMNS
from analytics.reads.metrics import Metrics, sort_column
from analytics.reads.window import Window
from workspaces.models import ApiKey, RoutingConfig, Workspace

GROUP_LIMIT = 200
# Row keys of the sort columns (analytics.reads.metrics.SORT_COLUMNS) the dashboard's rows
# spell differently.
_ROW_KEYS = {"avg_latency_ms": "avg_latency", "p95_latency_ms": "p95_latency", "total_tokens": "tokens"}
# Keys people write in several spellings; compared after lower-casing and dropping - and _.
_SYNONYMS = {"env": "environment", "usr": "user", "userid": "user", "feature": "featurename", "tenant": "customer"}


def _read(workspace: Workspace, window: Window, question: Question, log_filter: LogFilter | None = None) -> dict:
    return read(workspace, window.start, window.end, question, log_filter)


def hourly(
    workspace: Workspace, window: Window, *, hist: bool = True, log_filter: LogFilter | None = None
) -> dict[datetime, Metrics]:
    """Totals per hour of the window (under the filter), with histograms unless ``hist`` is off."""
    cells = _read(workspace, window, Question(("hour",), hist=hist), log_filter)
    return {group[0]: cell for group, cell in cells.items()}


def _metrics(cell: Metrics | None, *, p95: bool = True) -> dict:
    """What the pages show for a set of requests."""
    cell = cell or Metrics()
    requests, errors = cell.requests, cell.errors
    tokens = cell.prompt_tokens + cell.completion_tokens
    return {
        "requests": requests,
        "errors": errors,
        "cost": cell.cost,
        "tokens": tokens,
        "prompt_tokens": cell.prompt_tokens,
        "completion_tokens": cell.completion_tokens,
        "cached_prompt_tokens": cell.cached_prompt_tokens,
        "cache_write_tokens": cell.cache_write_tokens,
        "reasoning_tokens": cell.reasoning_tokens,
        "audio_prompt_tokens": cell.audio_prompt_tokens,
        "audio_completion_tokens": cell.audio_completion_tokens,
        "unpriced_requests": cell.unpriced_requests,
        "avg_tokens": tokens / requests if requests else None,
        "avg_latency": cell.latency_sum_ms / requests if requests else None,
        "p95_latency": histogram.percentile(cell.hist, 95) if p95 and cell.hist else None,
        "error_rate": errors / requests if requests else None,
        "success_rate": (requests - errors) / requests if requests else None,
        "last_seen": cell.last_seen,
    }


# --- Overview ----------------------------------------------------------------------------


def unique_users(workspace: Workspace, window: Window, log_filter: LogFilter | None = None) -> int:
    """Distinct users in the window (under the filter). A count does not add up across cached
    pieces, but the set of users does: this counts the user groups (shared with the Users page).
    Values the rollups folded into "(other)" are not counted."""
    cells = _group_cells(workspace, window, "user", log_filter, hist=False)
    return sum(1 for value in cells if value != MetadataRollup.OTHER_VALUE)


def totals(
    workspace: Workspace,
    window: Window,
    *,
    hours: dict[datetime, Metrics] | None = None,
    log_filter: LogFilter | None = None,
) -> dict:
    hours = hourly(workspace, window, log_filter=log_filter) if hours is None else hours
    total = Metrics()
    for cell in hours.values():
        total.add(cell)
    result = _metrics(total)
    result["users"] = unique_users(workspace, window, log_filter)
    return result


def request_total(workspace: Workspace, window: Window) -> int:
    """Requests in the window (no histograms: for shares and ratios)."""
    cell = _read(workspace, window, Question()).get(())
    return cell.requests if cell else 0


def models_and_providers(workspace: Workspace, window: Window) -> dict[str, list[str]]:
    """Models and providers seen in the window, for filter dropdowns."""
    pairs = _read(workspace, window, Question(("provider", "model")))
    return {
        "models": sorted({model for _, model in pairs if model}),
        "providers": sorted({provider for provider, _ in pairs if provider}),
    }


def _change(now: object, before: object) -> float | None:
    if now is None or before in (None, 0):
        return None
    return (float(now) - float(before)) / float(before)


def kpis(workspace: Workspace, window: Window, log_filter: LogFilter | None = None) -> dict:
    """Totals for the window and the one before it, with relative changes, plus the hourly
    cells both were computed from (for the charts)."""
    # The engine reads the window it is given; the filter's own start/end only bound log lists.
    before = window.previous()
    hours = hourly(workspace, window, log_filter=log_filter)
    previous_hours = hourly(workspace, before, log_filter=log_filter)
    current = totals(workspace, window, hours=hours, log_filter=log_filter)
    previous = totals(workspace, before, hours=previous_hours, log_filter=log_filter)
    changes = {name: _change(current[name], previous[name]) for name in current if name != "last_seen"}
    return {"current": current, "previous": previous, "change": changes, "hours": (hours, previous_hours)}


def _step_of(window: Window) -> callable:
    if window.step == "hour":
        return lambda group: group
    return lambda group: (group[0].replace(hour=0),)


def timeseries(
    workspace: Workspace, window: Window, *, hours: dict[datetime, Metrics] | None = None, p95: bool = True
) -> dict:
    """Per chart bucket: requests, errors, cost, tokens, avg and p95 latency, error rate
    (uPlot's layout: one list of epoch seconds and one list per series)."""
    hours = hourly(workspace, window) if hours is None else hours
    points = merge_cells([{(hour,): cell for hour, cell in hours.items()}], key=_step_of(window))
    buckets = window.buckets()
    metrics = [_metrics(points[(bucket,)], p95=p95) if (bucket,) in points else {} for bucket in buckets]
    series = {}
    for name in ("requests", "errors", "cost", "tokens", "avg_latency", "p95_latency", "error_rate"):
        values = [m.get(name) for m in metrics]
        if name in ("requests", "errors", "tokens", "cost"):
            values = [0 if v is None else v for v in values]
        series[name] = [float(v) if isinstance(v, Decimal) else v for v in values]
    series["t"] = [int(b.timestamp()) for b in buckets]
    return series


# --- Group by ----------------------------------------------------------------------------


def api_key_names(workspace: Workspace) -> dict[int, str]:
    return {
        pk: f"{name} ({prefix}…)"
        for pk, name, prefix in ApiKey.objects.filter(workspace=workspace).values_list("id", "name", "prefix")
    }


def saved_configs(workspace: Workspace) -> dict[str, RoutingConfig]:
    """The workspace's saved configs by public id (pc-...), for the logs' config filter and detail."""
    return {config.public_id: config for config in RoutingConfig.objects.filter(workspace=workspace).order_by("slug")}


def _label(dimension: str, value: object, key_names: dict[int, str]) -> str:
    if dimension == "api_key":
        return key_names.get(value, "(no key)") if value else "(no key)"
    return str(value) if value not in (None, "") else "(none)"


def _group_cells(
    workspace: Workspace, window: Window, dimension: str, log_filter: LogFilter | None, *, hist: bool
) -> dict[object, Metrics]:
    """{value: Metrics} for every value of ``dimension`` in the window (under the filter)."""
    cells = _read(workspace, window, Question(("group",), dimension, hist=hist), log_filter)
    return {value: cell for (value,), cell in cells.items()}


def _top_rows(workspace: Workspace, dimension: str, cells: dict[object, Metrics]) -> list[dict]:
    top = sorted(cells.items(), key=lambda item: (-item[1].requests, str(item[0])))[:GROUP_LIMIT]
    key_names = api_key_names(workspace) if dimension == "api_key" and top else {}
    return [{"raw": value, "value": _label(dimension, value, key_names), **_metrics(cell)} for value, cell in top]


def group_table(
    workspace: Workspace,
    window: Window,
    dimension: str,
    *,
    sort: str = "requests",
    desc: bool = True,
    p95: bool = True,
    log_filter: LogFilter | None = None,
) -> list[dict]:
    """One row per value of ``dimension`` (model, provider, api_key, user or metadata.<key>):
    value, requests, cost, avg tokens, avg and p95 latency, success rate, last seen. The
    GROUP_LIMIT values with the most requests."""
    cells = _group_cells(workspace, window, dimension, log_filter, hist=p95)
    return sort_rows(_top_rows(workspace, dimension, cells), sort, desc)


def group_report(
    workspace: Workspace,
    window: Window,
    dimension: str,
    *,
    sort: str = "requests",
    desc: bool = True,
    log_filter: LogFilter | None = None,
) -> dict:
    """The Summary table: ``group_table``'s rows with each one's share of all requests, then the
    rows that make them add up to ``total``: the values past GROUP_LIMIT, and "(not set)" for
    requests without the grouped key (total minus every value, metrics subtracted exactly)."""
    cells = _group_cells(workspace, window, dimension, log_filter, hist=True)
    # One cell, not the hours summed here: on a cache miss, per-hour histograms were thousands
    # of rows to read and merge for a single total.
    total = _read(workspace, window, Question(hist=True), log_filter).get(()) or Metrics()
    rows = _top_rows(workspace, dimension, cells)
    for row in rows:
        row["share"] = row["requests"] / total.requests if total.requests else None
    rows = sort_rows(rows, sort, desc)
    grouped, shown = Metrics(), Metrics()
    for cell in cells.values():
        grouped.add(cell)
    for row in rows:
        shown.add(cells[row["raw"]])
    extra = []
    if len(cells) > len(rows):
        extra.append(
            {"raw": None, "value": f"({len(cells) - len(rows)} more values)", **_metrics(grouped.minus(shown))}
        )
    if total.requests > grouped.requests:
        extra.append({"raw": None, "value": "(not set)", "not_set": True, **_metrics(total.minus(grouped))})
    for row in extra:
        row["share"] = row["requests"] / total.requests if total.requests else None
    return {"rows": rows, "extra": extra, "total": _metrics(total)}


def sort_rows(rows: list[dict], sort: str, desc: bool) -> list[dict]:
    """``rows`` sorted by the column ``sort`` names (a SORT_COLUMNS name or alias; requests
    when the rows have no such column)."""
    sort = _ROW_KEYS.get(sort_column(sort) or "requests", sort_column(sort) or "requests")
    sort = sort if rows and sort in rows[0] else "requests"
    if sort == "value":
        return sorted(rows, key=lambda row: str(row["value"]).lower(), reverse=desc)
    present = [row for row in rows if row[sort] is not None]
    missing = [row for row in rows if row[sort] is None]
    # Rows without a value (no latency yet, ...) go last in either direction.
    return sorted(present, key=lambda row: row[sort], reverse=desc) + missing


def group_series(
    workspace: Workspace, window: Window, dimension: str, values: list, log_filter: LogFilter | None = None
) -> dict:
    """Requests per chart bucket for each of ``values`` (the top values of a group table)."""
    question = Question(("group", window.step), dimension, tuple(values))
    cells = _read(workspace, window, question, log_filter) if values else {}
    points: dict[object, dict[datetime, int]] = defaultdict(dict)
    for (value, bucket), cell in cells.items():
        points[value][bucket] = cell.requests
    buckets = window.buckets()
    return {
        "t": [int(b.timestamp()) for b in buckets],
        "series": [[value, [points[value].get(b, 0) for b in buckets]] for value in values],
    }


# --- Errors ------------------------------------------------------------------------------


def dimension_cells(workspace: Workspace, window: Window, log_filter: LogFilter | None = None) -> dict[tuple, Metrics]:
    """What the Errors page's dimension tables read; compute once per page and pass it on."""
    # Grouped "by model" so that a metadata filter is read from the logs (the rollups do not
    # carry metadata with these columns).
    return _read(workspace, window, Question(DIMENSION_COLUMNS, "model"), log_filter)


def status_codes(cells: dict[tuple, Metrics]) -> list[dict]:
    """Requests per HTTP status code in ``cells`` (dimension_cells of a window), most frequent
    first within each class (2xx, then 4xx, ...). ``code`` is None for rollup rows written
    before codes were kept (their class is still known; ``rebuild_rollups`` fills the code in)."""
    by_code = merge_cells([cells], key=lambda group: (group[3], group[4]))
    total = sum(cell.requests for cell in by_code.values()) or 1
    ordered = sorted(by_code.items(), key=lambda item: (item[0][0], -item[1].requests, item[0][1]))
    return [
        {
            "status": str(code) if code else f"{status_class}xx",
            "code": code or None,
            "status_class": status_class,
            "requests": cell.requests,
            "errors": cell.errors,
            "share": cell.requests / total,
        }
        for (status_class, code), cell in ordered
    ]


_DIMENSION_INDEX = {"provider": 0, "model": 1, "api_key": 2}


def top_failing(workspace: Workspace, cells: dict[tuple, Metrics], dimension: str, limit: int = 8) -> list[dict]:
    """Values of ``dimension`` (provider, model or api_key) with the most errors in ``cells``
    (dimension_cells of a window)."""
    index = _DIMENSION_INDEX[dimension]
    by_value = merge_cells([cells], key=lambda group: (group[index],))
    failing = sorted(
        ((value, cell) for (value,), cell in by_value.items() if cell.errors),
        key=lambda item: (-item[1].errors, str(item[0])),
    )[:limit]
    key_names = api_key_names(workspace) if dimension == "api_key" and failing else {}
    return [
        {
            "raw": value,
            "value": _label(dimension, value, key_names),
            "requests": cell.requests,
            "errors": cell.errors,
            "error_rate": cell.errors / cell.requests if cell.requests else 0,
        }
        for value, cell in failing
    ]


def _key_value_cells(workspace: Workspace, window: Window) -> dict[tuple, Metrics]:
    return _read(workspace, window, Question(("key", "value")))


def top_failing_metadata(workspace: Workspace, window: Window, limit: int = 10) -> list[dict]:
    """(key, value) pairs with the most errors, ``_user`` included."""
    cells = _key_value_cells(workspace, window)
    failing = sorted(
        ((group, cell) for group, cell in cells.items() if cell.errors),
        key=lambda item: (-item[1].errors, item[0]),
    )[:limit]
    return [
        {
            "key": key,
            "value": value,
            "requests": cell.requests,
            "errors": cell.errors,
            "error_rate": cell.errors / cell.requests if cell.requests else 0,
        }
        for (key, value), cell in failing
    ]


# --- Metadata keys -----------------------------------------------------------------------


def normalised_key(key: str) -> str:
    """What near-duplicate spellings have in common: case, '-', '_' and spaces dropped, and
    common abbreviations expanded (``env`` -> ``environment``)."""
    plain = re.sub(r"[\s_\-.]+", "", key.lower())
    return _SYNONYMS.get(plain, plain)


def _key_rows(workspace: Workspace, window: Window) -> list[dict]:
    per_key: dict[str, dict] = {}
    for (key, _value), cell in _key_value_cells(workspace, window).items():
        row = per_key.setdefault(key, {"key": key, "requests": 0, "distinct_values": 0, "window_last": None})
        row["requests"] += cell.requests
        row["distinct_values"] += 1
        if cell.last_seen and (row["window_last"] is None or cell.last_seen > row["window_last"]):
            row["window_last"] = cell.last_seen
    return sorted(per_key.values(), key=lambda row: (-row["requests"], row["key"]))


def metadata_key_report(workspace: Workspace, window: Window, total_requests: int) -> dict:
    """Every key seen in the window: requests carrying it, share, distinct values, first/last
    seen, whether the schema declares it, and near-duplicate groups with the API keys that
    send each spelling."""
    rows = _key_rows(workspace, window)
    registry = {
        row["key"]: row
        for row in MetadataKey.objects.filter(workspace=workspace).values(
            "key", "first_seen", "last_seen", "distinct_values", "top_values"
        )
    }
    declared = set((workspace.metadata_schema or {}).get("properties") or {})
    groups: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        groups[normalised_key(row["key"])].append(row["key"])
    duplicates = [sorted(keys) for keys in groups.values() if len(keys) > 1]
    duplicate_keys = {key for keys in duplicates for key in keys}
    senders = _api_keys_sending(workspace, window, duplicate_keys) if duplicate_keys else {}
    key_names = api_key_names(workspace) if senders else {}
    for row in rows:
        known = registry.get(row["key"], {})
        row["first_seen"] = known.get("first_seen")
        row["last_seen"] = row["window_last"] or known.get("last_seen")
        row["share"] = row["requests"] / total_requests if total_requests else None
        row["declared"] = row["key"] in declared
        row["duplicate_of"] = [k for k in groups[normalised_key(row["key"])] if k != row["key"]]
    by_key = {row["key"]: row for row in rows}
    warnings = [
        {
            "keys": [
                {
                    "key": key,
                    "requests": by_key[key]["requests"],
                    "declared": by_key[key]["declared"],
                    "api_keys": [key_names.get(pk, "(no key)") if pk else "(no key)" for pk in senders.get(key, [])],
                }
                for key in sorted(keys, key=lambda k: -by_key[k]["requests"])
            ]
        }
        for keys in duplicates
    ]
    undeclared = [name for name in declared if name not in by_key]
    return {"keys": rows, "warnings": warnings, "declared_unseen": sorted(undeclared)}


def _api_keys_sending(workspace: Workspace, window: Window, keys: set[str]) -> dict[str, list[int | None]]:
    """Which API keys sent each of ``keys`` during the window, from MetadataKeySender (kept by
    the log writer, one row per key and API key): a sender counts when its first..last seen
    span overlaps the window. ``None`` stands for logs without a key (custom logs)."""
    senders: dict[str, set[int | None]] = defaultdict(set)
    rows = MetadataKeySender.objects.filter(
        workspace=workspace, key__in=keys, last_seen__gte=window.start, first_seen__lt=window.end
    ).values_list("key", "api_key_id")
    for key, api_key_id in rows:
        senders[key].add(api_key_id or None)
    return {key: sorted(ids, key=lambda pk: pk or 0) for key, ids in senders.items()}
